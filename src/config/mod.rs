//! Settings, resolved once into validated configs that are never changed
//! afterwards: [`ReaderConfig`] for a read (and the few settings each reader
//! sub-command needs), [`WriterConfig`] for a write. Each setting comes from
//! its flag, else `-D` (its EMR name), else the environment (Hadoop-mangled,
//! or as Pig passes it), else its default.

pub mod aws;
pub mod checks;
pub mod layers;
pub mod reader;
pub mod writer;

pub use aws::{AwsSettings, StaticKeys};
pub use layers::{exported, mangle, names, parse_duration, parse_size, Layers};
pub use reader::{CheckpointSettings, MapMode, ReaderCommand, ReaderConfig, TableSettings};
pub use writer::{IterationContext, WriterConfig};
