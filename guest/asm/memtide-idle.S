/*
 * memtide-idle: an /init that never makes a system call.
 *
 * On hosts where guest user space cannot enter the kernel (the nested
 * kvm_pvm host, see docs/nested-host.md) any real init dies on its first
 * system call and the kernel panics. This one only spins with `pause`, so
 * the guest kernel stays up and in-kernel work (the balloon driver, memory
 * hot-add) can be exercised. Built by `cargo xtask initramfs` with
 * `gcc -nostdlib -static`; it is not Rust because it needs no runtime.
 */
	.globl _start
	.text
_start:
1:	pause
	jmp	1b
