//! Where the network runs: the backends chosen by cargo features, and opening a GPU with known
//! limits.

pub mod backend;
pub mod gpu;
