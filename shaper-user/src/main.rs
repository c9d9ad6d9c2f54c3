//! The `shaper` binary: parse arguments, set up logging, call the library, print one line on
//! error and exit non-zero.
use std::process::ExitCode;

use clap::{CommandFactory, Parser};

mod cli;

use cli::{
    Cli, Command, ConfigCommand, ForecastCommand, TraceCommand, config_check, demo, demo_cluster,
    demo_day, detach, exchange, explain, forecast, history, run, simulate, stats, top,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&cli.log))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: journald and files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if cli.log_format == "json" {
        logs.json().flatten_event(true).init();
    } else {
        logs.init();
    }

    let result = match &cli.command {
        Command::Config(ConfigCommand::Check { file, json }) => config_check::execute(file, *json),
        Command::Config(ConfigCommand::Example) => {
            print!("{}", shaper::config::ANNOTATED);
            Ok(())
        }
        Command::Stats(args) => stats::execute(args),
        Command::Detach { iface } => detach::execute(iface),
        Command::Top { iface, refresh_ms } => top::execute(
            iface.as_deref(),
            std::time::Duration::from_millis(*refresh_ms),
        ),
        Command::Completions { shell } => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "shaper",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Man => clap_mangen::Man::new(Cli::command())
            .render(&mut std::io::stdout())
            .map_err(Into::into),
        Command::Run(args) => {
            runtime().and_then(|rt| rt.block_on(run::execute(args, run::signals())))
        }
        Command::Forecast(ForecastCommand::Eval(args)) => forecast::eval(args),
        Command::Forecast(ForecastCommand::Gen(args)) => forecast::generate(args),
        Command::Trace(TraceCommand::Gen(args)) => simulate::generate(args),
        Command::Simulate(args) => simulate::execute(args),
        Command::Exchange(args) => exchange::execute(args),
        Command::Explain(args) => explain::execute(args),
        Command::History(args) => history::execute(args),
        Command::Report(args) => history::report(args),
        Command::Demo(args) if args.hosts.is_some() => runtime().and_then(|rt| {
            rt.block_on(demo_cluster::execute(
                args,
                args.hosts.unwrap_or(3) as usize,
            ))
        }),
        Command::Demo(args) if args.quick => {
            runtime().and_then(|rt| rt.block_on(demo::execute(args)))
        }
        Command::Demo(args) => runtime().and_then(|rt| rt.block_on(demo_day::execute(args))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// The error and its causes on one line, without repeating what the outer message says.
fn one_line(e: &anyhow::Error) -> String {
    let mut s = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
    }
    s
}
