//! `aethex-mock`: the mock API for manual play. Scripting over HTTP under `/__mock/`
//! (see server-mock/README.md).

use std::net::SocketAddr;
use std::time::Duration;

use aethex_mock::MockServer;
use clap::Parser;

/// Scriptable mock of the AeThex Cloud API (auth + saves) with fault injection under /__mock/.
#[derive(Parser, Debug)]
#[command(name = "aethex-mock", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "AETHEX_MOCK_LISTEN", default_value = "127.0.0.1:9090")]
    listen: SocketAddr,
    /// Client key players must send in X-AeThex-Key (random when absent).
    #[arg(long, env = "AETHEX_MOCK_CLIENT_KEY")]
    client_key: Option<String>,
    /// Access-token lifetime in seconds.
    #[arg(long, default_value_t = 900)]
    access_token_ttl_secs: u64,
    /// Largest serialized save in bytes.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    max_slot_bytes: i64,
    /// Versions kept per slot (older ones are pruned).
    #[arg(long, default_value_t = 50)]
    history_versions: usize,
    /// Bytes of saves (every kept version) per user.
    #[arg(long, default_value_t = 1024 * 1024 * 1024)]
    user_quota_bytes: i64,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let mut builder = MockServer::builder()
        .listen(args.listen)
        .access_token_ttl(Duration::from_secs(args.access_token_ttl_secs))
        .max_slot_bytes(args.max_slot_bytes)
        .user_quota_bytes(args.user_quota_bytes)
        .history_versions(args.history_versions);
    if let Some(key) = args.client_key {
        builder = builder.client_key(key);
    }
    let mock = builder.start_blocking()?;
    println!("aethex-mock listening on {}", mock.url());
    println!("client key: {}", mock.client_key());
    println!(
        "scripting: {}/__mock/ (see server-mock/README.md)",
        mock.url()
    );
    let waiter = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    waiter.block_on(tokio::signal::ctrl_c())?;
    waiter.block_on(mock.stop());
    Ok(())
}
