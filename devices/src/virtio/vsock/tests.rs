//! The device against real Unix sockets and a pretend driver (see
//! `test_driver.rs`): both connection directions, credit, malformed
//! packets, reset.

use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;

use super::connection::{SHUTDOWN_RCV, SHUTDOWN_SEND};
use super::packet::{Header, Op, HEADER_LEN, HOST_CID, MAX_PAYLOAD};
use super::test_driver::{
    guest_header, host_sees_eof, read_host, temp_dir, test_mem, Driver, Segments, GUEST_CID,
};
use super::{
    uds, Vsock, VsockError, VsockShared, BUF_ALLOC, FIRST_EPHEMERAL_PORT, MAX_PENDING_CLIENTS,
};
use crate::bus::lock;
use crate::virtio::{ActivateError, VirtioDevice, TYPE_VSOCK, VIRTIO_F_VERSION_1};

/// Binds the host service for guest connections to host port `port`.
fn host_service(d: &Driver<'_>, port: u32) -> UnixListener {
    UnixListener::bind(uds::port_path(&d.uds, port)).expect("host service")
}

/// The guest connects from `guest_port` to host `port`; returns the host
/// end of the connection and the RESPONSE.
fn connect(
    d: &mut Driver<'_>,
    l: &UnixListener,
    guest_port: u32,
    port: u32,
) -> (UnixStream, Header) {
    d.send(&guest_header(Op::Request, guest_port, port, 0), &[]);
    let (resp, _) = d.next_rx();
    let (peer, _) = l.accept().expect("the device connected");
    (peer, resp)
}

fn assert_rst(h: &Header, guest_port: u32, port: u32) {
    assert_eq!(h.op, Op::Rst, "{h:?}");
    assert_eq!((h.src_port, h.dst_port), (port, guest_port), "{h:?}");
    assert_eq!((h.src_cid, h.dst_cid), (HOST_CID, GUEST_CID));
}

#[test]
fn identity_config_space_and_construction_errors() {
    let dir = temp_dir("identity");
    let uds = dir.join("v.sock");
    let new = |cid: u64, shared_cid: u64| {
        Vsock::new(cid, uds.clone(), Arc::new(VsockShared::new(shared_cid)))
    };
    for bad in [0, 1, 2, u64::from(u32::MAX), u64::MAX] {
        assert!(matches!(new(bad, bad), Err(VsockError::InvalidCid(c)) if c == bad));
    }
    assert!(matches!(new(3, 4), Err(VsockError::CidMismatch { .. })));
    let long = dir.join("x".repeat(120));
    assert!(matches!(
        Vsock::new(3, long, Arc::new(VsockShared::new(3))),
        Err(VsockError::PathTooLong(_))
    ));
    let mut v = new(0x2345_6789, 0x2345_6789).expect("device");
    assert_eq!(v.device_type(), TYPE_VSOCK);
    assert_eq!(v.queue_max_sizes(), vec![256; 3]);
    assert_eq!(v.avail_features(), 1 << VIRTIO_F_VERSION_1, "no SEQPACKET");
    let mut cfg = [0xffu8; 8];
    v.read_config(0, &mut cfg);
    assert_eq!(u64::from_le_bytes(cfg), 0x2345_6789);
    let mut part = [0xffu8; 4];
    v.read_config(3, &mut part);
    assert_eq!(part, [0x23, 0, 0, 0]);
    v.read_config(6, &mut part);
    assert_eq!(part, [0; 4], "past the 8-byte space reads 0");
    v.write_config(0, &[9; 8]);
    v.read_config(0, &mut cfg);
    assert_eq!(
        u64::from_le_bytes(cfg),
        0x2345_6789,
        "guest_cid is read-only"
    );
    let status = v.shared().status();
    assert!(!status.driver_ready);
    assert_eq!(status.guest_cid, 0x2345_6789);

    let mem = test_mem();
    let err = v.activate(
        1 << VIRTIO_F_VERSION_1,
        Vec::new(),
        vm_memory::GuestMemoryAtomic::new(mem),
        Arc::new(crate::virtio::Interrupt::new(
            vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK).expect("irq"),
        )),
    );
    assert_eq!(err, Err(ActivateError::QueueCount { needed: 3, got: 0 }));
    drop(v);
    assert!(!uds.exists(), "the listener socket goes with the device");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn guest_connects_sends_receives_and_closes() {
    let mem = test_mem();
    let mut d = Driver::new(&mem, "guest-conn");
    assert!(d.status().driver_ready);
    let l = host_service(&d, 5000);
    d.give_rx(4, 4096);
    let (mut peer, resp) = connect(&mut d, &l, 1234, 5000);
    assert_eq!(resp.op, Op::Response);
    assert_eq!((resp.src_cid, resp.dst_cid), (HOST_CID, GUEST_CID));
    assert_eq!((resp.src_port, resp.dst_port), (5000, 1234));
    assert_eq!((resp.buf_alloc, resp.fwd_cnt), (BUF_ALLOC, 0));

    // Header and payload in separate descriptors.
    d.send_split(&guest_header(Op::Rw, 1234, 5000, 5), b"hello");
    assert_eq!(read_host(&mut d, &mut peer, 5), b"hello");

    peer.write_all(b"world").expect("host writes");
    let (h, payload) = d.next_rx();
    assert_eq!(h.op, Op::Rw);
    assert_eq!((h.src_port, h.dst_port, h.len), (5000, 1234, 5));
    assert_eq!(
        (h.buf_alloc, h.fwd_cnt),
        (BUF_ALLOC, 5),
        "5 bytes forwarded"
    );
    assert_eq!(payload, b"world");

    let s = d.status();
    assert_eq!((s.connections, s.connections_opened), (1, 1));
    assert_eq!((s.tx_packets, s.rx_packets), (2, 2));
    assert_eq!((s.tx_bytes, s.rx_bytes), (5, 5));

    // The guest closes: SHUTDOWN both ways, the device answers RST.
    let mut shut = guest_header(Op::Shutdown, 1234, 5000, 0);
    shut.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
    d.send(&shut, &[]);
    let (h, _) = d.next_rx();
    assert_rst(&h, 1234, 5000);
    assert!(host_sees_eof(&mut d, &mut peer));
    let s = d.status();
    assert_eq!((s.connections, s.connections_reset), (0, 0));
}

#[test]
fn host_data_waits_for_receive_buffers_and_guest_credit() {
    let mem = test_mem();
    let mut d = Driver::new(&mem, "credit");
    let l = host_service(&d, 5001);
    d.give_rx(1, 4096);
    let mut req = guest_header(Op::Request, 99, 5001, 0);
    req.buf_alloc = 4;
    d.send(&req, &[]);
    assert_eq!(d.next_rx().0.op, Op::Response);
    let (mut peer, _) = l.accept().expect("accepted");

    peer.write_all(b"abcdefgh").expect("host writes");
    assert!(d.take_rx().is_empty(), "no receive buffer yet");
    d.give_rx(3, 4096);
    let (h, payload) = d.next_rx();
    assert_eq!((h.op, h.len), (Op::Rw, 4));
    assert_eq!(payload, b"abcd", "only the guest's 4 bytes of credit");
    assert!(d.take_rx().is_empty(), "credit used up");

    let mut update = guest_header(Op::CreditUpdate, 99, 5001, 0);
    update.buf_alloc = 4;
    update.fwd_cnt = 4;
    d.send(&update, &[]);
    let (h, payload) = d.next_rx();
    assert_eq!((h.op, payload.as_slice()), (Op::Rw, &b"efgh"[..]));

    // The host closes its side: once the guest has credit again (EOF is
    // read like data) it hears SHUTDOWN (host sends no more), then
    // resets; that is an orderly end.
    drop(peer);
    update.fwd_cnt = 8;
    d.send(&update, &[]);
    let (h, _) = d.next_rx();
    assert_eq!((h.op, h.flags), (Op::Shutdown, SHUTDOWN_SEND));
    d.send(&guest_header(Op::Rst, 99, 5001, 0), &[]);
    d.pump();
    let s = d.status();
    assert_eq!((s.connections, s.connections_reset, s.rx_bytes), (0, 0, 8));
}

#[test]
fn credit_request_update_and_overrun() {
    let mem = test_mem();
    let mut d = Driver::new(&mem, "overrun");
    lock(&d.dev).buf_alloc = 16;
    let l = host_service(&d, 5002);
    d.give_rx(8, 4096);
    let (mut peer, resp) = connect(&mut d, &l, 7, 5002);
    assert_eq!(resp.buf_alloc, 16);

    d.send(&guest_header(Op::CreditRequest, 7, 5002, 0), &[]);
    let (h, _) = d.next_rx();
    assert_eq!((h.op, h.buf_alloc, h.fwd_cnt), (Op::CreditUpdate, 16, 0));

    // 9 of 16 bytes forwarded: more than half, so the device says so.
    d.send(&guest_header(Op::Rw, 7, 5002, 9), b"123456789");
    assert_eq!(read_host(&mut d, &mut peer, 9), b"123456789");
    let (h, _) = d.next_rx();
    assert_eq!((h.op, h.fwd_cnt), (Op::CreditUpdate, 9));

    // 17 bytes with 16 of credit: reset.
    d.send(&guest_header(Op::Rw, 7, 5002, 17), &[b'x'; 17]);
    let (h, _) = d.next_rx();
    assert_rst(&h, 7, 5002);
    assert!(host_sees_eof(&mut d, &mut peer), "nothing of the overrun");
    let s = d.status();
    assert_eq!((s.connections, s.connections_reset, s.tx_bytes), (0, 1, 9));
}

#[test]
fn guest_bytes_wait_for_a_slow_host_reader() {
    let mem = test_mem();
    let mut d = Driver::new(&mem, "slow-host");
    let l = host_service(&d, 5005);
    d.give_rx(8, 4096);
    let (mut peer, _) = connect(&mut d, &l, 80, 5005);
    let chunk = MAX_PAYLOAD as usize;
    let data: Vec<u8> = (0..BUF_ALLOC as usize)
        .map(|i| u8::try_from(i % 251).expect("below 251"))
        .collect();
    for part in data.chunks(chunk) {
        d.send_split(
            &guest_header(
                Op::Rw,
                80,
                5005,
                u32::try_from(part.len()).expect("part length"),
            ),
            part,
        );
    }
    // All of the guest's credit is in flight: written or held.
    let pending = lock(&d.dev)
        .conns
        .values()
        .map(|c| c.pending_to_host())
        .sum::<usize>();
    assert_eq!(
        usize::try_from(d.status().tx_bytes).expect("byte count") + pending,
        data.len()
    );
    assert_eq!(read_host(&mut d, &mut peer, data.len()), data);
    let s = d.status();
    assert_eq!((s.tx_bytes, s.connections_reset), (data.len() as u64, 0));
    let updates = d.take_rx();
    let last = updates.last().expect("credit updates");
    assert_eq!(last.0.op, Op::CreditUpdate);
    assert_eq!(last.0.fwd_cnt, BUF_ALLOC, "all forwarded, guest told");
}

#[test]
fn malformed_packets_are_counted_and_reset_without_harm() {
    let mem = test_mem();
    let mut d = Driver::new(&mem, "malformed");
    let l = host_service(&d, 5003);
    d.give_rx(16, 4096);
    let (mut peer, _) = connect(&mut d, &l, 40, 5003);

    let good = guest_header(Op::Rw, 41, 6000, 3);
    let bytes = |f: &dyn Fn(&mut [u8])| {
        let mut b = good.to_bytes().to_vec();
        b.extend_from_slice(b"abc");
        f(&mut b);
        b
    };
    let cases: Vec<(&str, Segments, bool)> = vec![
        ("short header", vec![(vec![1; 20], false)], false),
        ("unknown op", vec![(bytes(&|b| b[30] = 99), false)], true),
        ("seqpacket type", vec![(bytes(&|b| b[28] = 2), false)], true),
        (
            "len beyond the buffer",
            vec![(bytes(&|b| b[24] = 100), false)],
            true,
        ),
        (
            "len over the maximum",
            vec![(
                bytes(&|b| b[24..28].copy_from_slice(&(MAX_PAYLOAD + 1).to_le_bytes())),
                false,
            )],
            true,
        ),
        (
            "payload on a control op",
            vec![(bytes(&|b| b[30] = Op::Request as u8), false)],
            true,
        ),
        ("wrong dst CID", vec![(bytes(&|b| b[8] = 9), false)], true),
        ("wrong src CID", vec![(bytes(&|b| b[0] = 9), false)], true),
        (
            "write-only descriptor in a tx chain",
            vec![(good.to_bytes().to_vec(), false), (b"abc".to_vec(), true)],
            true,
        ),
        (
            "bad RST is not answered",
            vec![(bytes(&|b| b[30] = Op::Rst as u8), false)],
            false,
        ),
    ];
    let n = cases.len();
    for (what, segs, answered) in cases {
        let before = d.status().malformed_packets;
        d.send_segments(&segs);
        assert_eq!(d.status().malformed_packets, before + 1, "{what}");
        let rx = d.take_rx();
        if answered {
            assert_eq!(rx.len(), 1, "{what}: {rx:?}");
            assert_rst(&rx[0].0, 41, 6000);
        } else {
            assert!(rx.is_empty(), "{what}: {rx:?}");
        }
    }
    assert_eq!(usize::from(d.tx_used()), n + 1, "every chain went back");

    // The established connection is untouched; a broken packet naming it
    // resets it.
    assert_eq!(d.status().connections, 1);
    let mut bad = guest_header(Op::Rw, 40, 5003, 0).to_bytes();
    bad[30] = 42;
    d.send_segments(&[(bad.to_vec(), false)]);
    let (h, _) = d.next_rx();
    assert_rst(&h, 40, 5003);
    assert!(host_sees_eof(&mut d, &mut peer));
    let s = d.status();
    assert_eq!((s.connections, s.connections_reset), (0, 1));
    assert_eq!(s.malformed_packets, n as u64 + 1);
}

#[test]
fn unknown_ports_and_connections_are_reset() {
    let mem = test_mem();
    let mut d = Driver::new(&mem, "unknown");
    d.give_rx(4, 4096);
    d.send(&guest_header(Op::Request, 50, 6001, 0), &[]);
    let (h, _) = d.next_rx();
    assert_rst(&h, 50, 6001);
    d.send(&guest_header(Op::Rw, 51, 6001, 2), b"hi");
    let (h, _) = d.next_rx();
    assert_rst(&h, 51, 6001);
    d.send(&guest_header(Op::Rst, 52, 6001, 0), &[]);
    assert!(d.take_rx().is_empty(), "an RST is never answered");
    let s = d.status();
    assert_eq!(
        (s.connections, s.connections_opened, s.connections_reset),
        (0, 0, 1)
    );
    assert_eq!(s.malformed_packets, 0);
}

#[test]
fn host_client_reaches_a_guest_listener() {
    let mem = test_mem();
    let mut d = Driver::new(&mem, "host-conn");
    d.give_rx(8, 4096);
    let mut client = UnixStream::connect(&d.uds).expect("connect to the device");
    // Data right behind the line waits for the guest.
    client.write_all(b"CONNECT 52\nping").expect("CONNECT");
    let (req, _) = d.next_rx();
    assert_eq!(req.op, Op::Request);
    assert_eq!((req.src_cid, req.dst_cid), (HOST_CID, GUEST_CID));
    assert_eq!(req.dst_port, 52);
    assert!(req.src_port >= FIRST_EPHEMERAL_PORT);
    assert_eq!((req.buf_alloc, req.fwd_cnt), (BUF_ALLOC, 0));
    assert_eq!(d.status().connections, 1);
    let local = req.src_port;

    let mut resp = guest_header(Op::Response, 52, local, 0);
    resp.buf_alloc = 4096;
    d.send(&resp, &[]);
    let want = format!("OK {local}\n");
    assert_eq!(read_host(&mut d, &mut client, want.len()), want.as_bytes());
    let (h, payload) = d.next_rx();
    assert_eq!((h.op, h.src_port, h.dst_port), (Op::Rw, local, 52));
    assert_eq!(payload, b"ping");

    d.send(&guest_header(Op::Rw, 52, local, 4), b"pong");
    assert_eq!(read_host(&mut d, &mut client, 4), b"pong");
    let s = d.status();
    assert_eq!((s.connections_opened, s.rx_bytes, s.tx_bytes), (1, 4, 4));

    // A second client gets another local port.
    let mut second = UnixStream::connect(&d.uds).expect("connect");
    second.write_all(b"CONNECT 52\n").expect("CONNECT");
    let (req2, _) = d.next_rx();
    assert_eq!(req2.op, Op::Request);
    assert_ne!(req2.src_port, local);
    // The guest has no such listener now: RST closes the client.
    d.send(&guest_header(Op::Rst, 52, req2.src_port, 0), &[]);
    assert!(host_sees_eof(&mut d, &mut second));
    assert_eq!(d.status().connections_reset, 1);
    assert_eq!(d.status().connections, 1);
}

#[test]
fn bad_connect_lines_close_the_client() {
    let mem = test_mem();
    let mut d = Driver::new(&mem, "bad-lines");
    d.give_rx(4, 4096);
    for line in [&b"HELLO 52\n"[..], b"CONNECT x\n", &[b'A'; 40]] {
        let mut c = UnixStream::connect(&d.uds).expect("connect");
        c.write_all(line).expect("write");
        assert!(host_sees_eof(&mut d, &mut c), "{line:?}");
    }
    assert!(d.take_rx().is_empty(), "nothing reached the guest");
    assert_eq!(d.status().connections, 0);
}

#[test]
fn silent_clients_cannot_lock_out_a_real_one() {
    let mem = test_mem();
    let mut d = Driver::new(&mem, "silent");
    d.give_rx(4, 4096);
    // More silent clients than there are pending places.
    let silent: Vec<UnixStream> = (0..MAX_PENDING_CLIENTS + 8)
        .map(|_| UnixStream::connect(&d.uds).expect("connect"))
        .collect();
    d.pump();
    let mut c = UnixStream::connect(&d.uds).expect("connect");
    c.write_all(b"CONNECT 52\n").expect("write");
    let (req, _) = d.next_rx();
    assert_eq!((req.op, req.dst_port), (Op::Request, 52));
    drop(silent);
}

#[test]
fn connect_before_the_driver_is_up_is_refused() {
    let mem = test_mem();
    let mut d = Driver::inactive(&mem, "inactive");
    d.pump();
    let mut c = UnixStream::connect(&d.uds).expect("connect");
    c.write_all(b"CONNECT 52\n").expect("write");
    assert!(host_sees_eof(&mut d, &mut c));
    d.activate();
    d.give_rx(1, 4096);
    let mut c = UnixStream::connect(&d.uds).expect("connect");
    c.write_all(b"CONNECT 52\n").expect("write");
    assert_eq!(d.next_rx().0.op, Op::Request);
}

#[test]
fn reset_drops_every_connection() {
    let mem = test_mem();
    let mut d = Driver::new(&mem, "reset");
    let l = host_service(&d, 5004);
    d.give_rx(4, 4096);
    let (mut peer, _) = connect(&mut d, &l, 60, 5004);
    assert_eq!(d.status().connections, 1);
    lock(&d.dev).reset();
    assert!(host_sees_eof(&mut d, &mut peer));
    let s = d.status();
    assert!(!s.driver_ready);
    assert_eq!(s.connections, 0);
}

#[test]
fn unusable_receive_buffers_go_back_empty() {
    let mem = test_mem();
    let mut d = Driver::new(&mem, "small-rx");
    d.give_rx(1, u32::try_from(HEADER_LEN).expect("header length") - 1);
    d.give_rx(1, 4096);
    d.send(&guest_header(Op::Request, 70, 6002, 0), &[]);
    let (h, _) = d.next_rx();
    assert_rst(&h, 70, 6002);
    assert_eq!(d.empty_rx, 1);
    assert_eq!(d.status().malformed_packets, 1);
}
