//! One module per subcommand: its clap arguments and what it does with them.

pub mod bench;
pub mod evaluate;
pub mod export;
pub mod import;
pub mod info;
pub mod inspect;
pub mod predict;
pub mod prepare;
pub mod synth;
pub mod train;
