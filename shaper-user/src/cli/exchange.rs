//! `shaper exchange`: asks the running agent to move rate between a tenant's token types.
use anyhow::{Context as _, Result, bail};

use crate::cli::ExchangeArgs;
use crate::cli::stats::agent_socket;

pub fn execute(args: &ExchangeArgs) -> Result<()> {
    // Rate changes go through the Unix socket (the TCP API is read-only).
    let (_, socket) = agent_socket(args.iface.as_deref(), "an exchange")?;
    let body = serde_json::json!({
        "tenant": args.tenant,
        "from": args.from,
        "to": args.to,
        "amount": args.amount,
    })
    .to_string();
    let (code, reply) = shaper::api::request_socket(
        &socket,
        "POST",
        "/v1/exchange",
        Some(&body),
        std::time::Duration::from_secs(10),
    )
    .with_context(|| format!("cannot reach the agent's API at {}", socket.display()))?;
    let v: serde_json::Value = serde_json::from_str(&reply)
        .with_context(|| format!("the agent answered {code}: {}", reply.trim()))?;
    if code != 200 {
        bail!(
            "exchange refused: {}",
            v["error"].as_str().unwrap_or(reply.trim())
        );
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let mbit = |k: &str| v["split_bps"][k].as_f64().unwrap_or(0.0) / 1e6;
        println!(
            "{}: gold {:.3}, silver {:.3}, bronze {:.3} Mbit/s",
            args.tenant,
            mbit("gold"),
            mbit("silver"),
            mbit("bronze")
        );
    }
    Ok(())
}
