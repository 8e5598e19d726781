//! The real engines (Hadoop Streaming, Pig, Spark SQL) running the binaries
//! against the emulator, as users run them: the streaming-examples scripts.
//! A test binary of its own, so that the engines' JVMs never share the
//! machine with the emulator suite's timing-sensitive fault tests (cargo
//! runs test binaries one after another).

#[allow(dead_code)]
#[path = "../emulator/harness.rs"]
mod harness;
mod jobs;
mod yarn;
