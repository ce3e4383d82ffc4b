//! The `arlen` command. Thin: parse arguments, hand off to a command module.

#![forbid(unsafe_code)]

/// `println!` that never panics: when what reads standard output has gone
/// (`arlen config | head -3`), the rest of the output is dropped and the
/// command still ends with its own exit status (a failed write used to
/// panic: exit 101). Rust ignores SIGPIPE, which a server needs.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `print!` that never panics (see [`say!`]).
macro_rules! say_raw {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = write!(out, $($arg)*);
        let _ = out.flush();
    }};
}

/// `eprintln!` that never panics (a closed standard error must not turn a
/// configuration error's exit 2 into 101).
macro_rules! shout {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

mod cli;
mod cluster;
mod config_cmd;
mod drill;
mod probe;
mod serve;
mod stop_permit;
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
        cli::Command::StopPermit(command) => stop_permit::run(command),
        cli::Command::Completions(args) => {
            // Into a buffer first: clap_complete panics on a failed write.
            let mut script = Vec::new();
            let mut command = <cli::Cli as clap::CommandFactory>::command();
            clap_complete::generate(args.shell, &mut command, "arlen", &mut script);
            say_raw!("{}", String::from_utf8_lossy(&script));
            ExitCode::SUCCESS
        }
        cli::Command::Man => {
            let mut page = Vec::new();
            let command = <cli::Cli as clap::CommandFactory>::command();
            match clap_mangen::Man::new(command).render(&mut page) {
                Ok(()) => {
                    say_raw!("{}", String::from_utf8_lossy(&page));
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    shout!("arlen man: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        cli::Command::Gossip(cli::GossipCommand::Keygen) => {
            say!("{}", arlen_membership::generate_gossip_key());
            ExitCode::SUCCESS
        }
    }
}
