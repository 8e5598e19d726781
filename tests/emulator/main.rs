//! Integration tests against a real AWS API emulator (moto server) over HTTP.
//! One test binary; each test uses its own stream, table and logical names.

mod examples;
mod faults;
mod harness;
mod mapmode;
mod newuser;
mod promises;
mod proxy;
mod reader;
mod reshard;
mod scale;
mod writer;
