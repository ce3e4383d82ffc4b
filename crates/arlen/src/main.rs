//! The `arlen` command. Thin: parse arguments, hand off to a command module.

#![forbid(unsafe_code)]

mod cli;
mod cluster;
mod config_cmd;
mod drill;
mod probe;
mod serve;
mod triage;
mod up;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli.command {
        cli::Command::Serve(args) => serve::run(args),
        cli::Command::Config(args) => config_cmd::run(args),
        cli::Command::Up(args) => up::run(args),
        cli::Command::Triage(args) => triage::run(args),
        cli::Command::Drill(args) => drill::run(args),
        cli::Command::Gossip(cli::GossipCommand::Keygen) => {
            println!("{}", arlen_membership::generate_gossip_key());
            ExitCode::SUCCESS
        }
    }
}
