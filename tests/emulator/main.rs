//! Integration tests against a real AWS API emulator (moto server) over HTTP.
//! One test binary; each test uses its own stream, table and logical names.

mod examples;
mod harness;
mod mapmode;
mod reader;
mod reshard;
mod writer;
