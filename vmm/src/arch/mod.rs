//! Architecture-specific pieces: the guest-physical layout, what is written
//! into guest memory before the first instruction, and vCPU register set-up.

pub mod x86_64;
