//! In-memory versions of the ports, for unit tests of the run logic: a
//! checkpoint store, a scripted stream, S3 objects and DynamoDB items, and a
//! wrapper that makes chosen calls of any of them fail. Built for the crate's
//! own tests, and for other crates' with the `fakes` feature. They never
//! replace the emulator tests, which talk to real service APIs.

mod faulty;
mod memory_items;
mod memory_objects;
mod memory_store;
mod memory_stream;

pub use faulty::{Fault, Faulty};
pub use memory_items::MemoryItems;
pub use memory_objects::MemoryObjects;
pub use memory_store::MemoryStore;
pub use memory_stream::{record, MemoryStream};
