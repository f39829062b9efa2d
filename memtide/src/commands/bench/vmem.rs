//! virtio-mem as the benchmarks drive it: wait for the guest driver, set
//! the requested size and time until the guest has plugged or unplugged
//! to it (`GET /memory/virtio-mem`).

use std::time::{Duration, Instant};

use super::guest::{Guest, GuestError};

/// How long the guest's virtio-mem driver may take to come up after the
/// balloon's.
const DRIVER_DEADLINE: Duration = Duration::from_secs(300);
/// How long one plug or unplug may take.
const RESIZE_DEADLINE: Duration = Duration::from_secs(300);
/// How often `GET /memory/virtio-mem` is polled while resizing.
const RESIZE_POLL: Duration = Duration::from_millis(2);

/// Waits for the guest's virtio-mem driver (until then a resize is refused).
pub fn wait_driver(guest: &mut Guest) -> Result<(), GuestError> {
    guest.wait_until(
        "the guest's virtio-mem driver (a kernel without CONFIG_VIRTIO_MEM? run `cargo xtask kernel`)",
        DRIVER_DEADLINE,
        Duration::from_millis(100),
        |g| Ok(g.api().get_virtio_mem()?.driver_ready),
    )
}

/// Sets the requested size to `mib` and waits until the guest's plugged
/// size equals it; returns the seconds from the request to that.
pub fn resize(guest: &mut Guest, mib: u64) -> Result<f64, GuestError> {
    let start = Instant::now();
    guest.api().set_virtio_mem_requested(mib)?;
    guest.wait_until(
        "the guest's plugged virtio-mem size to reach the request",
        RESIZE_DEADLINE,
        RESIZE_POLL,
        |g| Ok(g.api().get_virtio_mem()?.plugged_mib == mib),
    )?;
    Ok(start.elapsed().as_secs_f64())
}

/// The smallest virtio-mem region (a multiple of 128 MiB, the Linux x86
/// memory block) that holds `mib`.
pub fn region_for(mib: u64) -> u64 {
    mib.div_ceil(128).max(1) * 128
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_are_whole_memory_blocks() {
        assert_eq!(region_for(0), 128);
        assert_eq!(region_for(2), 128);
        assert_eq!(region_for(128), 128);
        assert_eq!(region_for(130), 256);
        assert_eq!(region_for(512), 512);
    }
}
