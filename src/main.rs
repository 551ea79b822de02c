//! Thin binary edge: parse the command line and hand over to `mailroom::cli`.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    mailroom::cli::main(mailroom::cli::Cli::parse()).await
}
