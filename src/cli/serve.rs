//! The flags of `kd serve`. Names follow text-embeddings-inference's where TEI has the same
//! knob (--port, --max-client-batch-size, --payload-limit), so its users find them.
use super::device::DeviceArgs;
use super::eval::ModelArgs;
use clap::Args;
use kd::commands::serve::ServeRequest;
use kd::run::limits::{whole, COUNT};
use kd::serve::{BatchSettings, Limits, ServeConfig};
use std::time::Duration;

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub source: ModelArgs,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Truncate texts to this many tokens [default: the run's own, 128 for --adapter]
    #[arg(long, value_parser = whole(COUNT), allow_negative_numbers = true)]
    pub max_len: Option<usize>,
    /// Address to listen on (0.0.0.0 for every interface)
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free port; the address is printed once bound)
    #[arg(long, default_value_t = 3000)]
    pub port: u16,
    /// Rows per forward pass: requests are gathered until they hold this many rows
    #[arg(long, default_value_t = 32, value_parser = whole(COUNT), allow_negative_numbers = true)]
    pub max_batch: usize,
    /// How long a request waits for others to join its batch, in milliseconds (0: a request
    /// runs at once with those already waiting; under load the next batch forms while a pass runs)
    #[arg(long, default_value_t = 0)]
    pub max_wait_ms: u64,
    /// Requests that may wait for the model; one more is answered 503
    #[arg(long, default_value_t = 256, value_parser = whole(COUNT), allow_negative_numbers = true)]
    pub queue_size: usize,
    /// Sequences one request may hold; more is answered 413
    #[arg(long, default_value_t = 32, value_parser = whole(COUNT), allow_negative_numbers = true)]
    pub max_client_batch_size: usize,
    /// Bytes one request body may hold; more is answered 413
    #[arg(long, default_value_t = 2_000_000, value_parser = whole(COUNT), allow_negative_numbers = true)]
    pub payload_limit: usize,
    /// Characters one text may hold; more is answered 422
    #[arg(long, default_value_t = 20_000, value_parser = whole(COUNT), allow_negative_numbers = true)]
    pub max_text_chars: usize,
    /// Run the encoder's layers in int8 (CPU: AMX-INT8 or AVX-512 VNNI; adapters merged, weights
    /// per output channel, activations per row); the weights are read in f32 first
    #[arg(long, conflicts_with = "dtype")]
    pub int8: bool,
    /// Tests only: the model worker sleeps this long before each batch
    #[arg(long, default_value_t = 0, hide = true)]
    pub test_batch_delay_ms: u64,
}

impl ServeArgs {
    pub fn into_request(self) -> anyhow::Result<ServeRequest> {
        let (device, dtype) = self.device.select_for_int8(self.int8)?;
        let dtype = if self.int8 {
            candle_core::DType::F32
        } else {
            dtype
        };
        Ok(ServeRequest {
            source: self.source.into_source()?,
            device,
            dtype,
            int8: self.int8,
            max_len: self.max_len,
            config: ServeConfig {
                host: self.host,
                port: self.port,
                batching: BatchSettings {
                    max_batch: self.max_batch,
                    max_wait: Duration::from_millis(self.max_wait_ms),
                    queue_size: self.queue_size,
                    delay: Duration::from_millis(self.test_batch_delay_ms),
                },
                limits: Limits {
                    payload_limit: self.payload_limit,
                    max_client_batch_size: self.max_client_batch_size,
                    max_text_chars: self.max_text_chars,
                },
            },
        })
    }
}
