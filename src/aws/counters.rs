//! What the SDK does out of sight, counted for the Hadoop counters and the
//! summary: its retries (attempts beyond the first of each call) and the
//! answers that said "slow down".

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeSerializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
    FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use std::sync::atomic::{AtomicU64, Ordering};

static CALLS: AtomicU64 = AtomicU64::new(0);
static ATTEMPTS: AtomicU64 = AtomicU64::new(0);
static THROTTLED: AtomicU64 = AtomicU64::new(0);

/// Registered on every client this crate builds.
#[derive(Debug)]
pub struct Counter;

impl Intercept for Counter {
    fn name(&self) -> &'static str {
        "kinesis-streaming-counter"
    }

    fn read_before_execution(
        &self,
        _: &BeforeSerializationInterceptorContextRef<'_>,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        CALLS.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn read_before_attempt(
        &self,
        _: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        ATTEMPTS.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn read_after_attempt(
        &self,
        ctx: &FinalizerInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(r) = ctx.response() {
            let kind = r.headers().get("x-amzn-errortype").unwrap_or("");
            if r.status().as_u16() == 429
                || kind.contains("Throttl")
                || kind.contains("ProvisionedThroughputExceeded")
                || kind.contains("SlowDown")
            {
                THROTTLED.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

/// Attempts the SDK made beyond the first of each call, so far.
pub fn retries() -> u64 {
    ATTEMPTS
        .load(Ordering::Relaxed)
        .saturating_sub(CALLS.load(Ordering::Relaxed))
}

/// Answers that asked us to slow down (throttling), so far.
pub fn throttled() -> u64 {
    THROTTLED.load(Ordering::Relaxed)
}
