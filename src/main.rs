//! Thin binary edge: tune the allocator, parse the command line and hand over to
//! `mailroom::cli` on a multi-threaded tokio runtime.

mod malloc_tuning;

use clap::Parser;

fn main() -> std::process::ExitCode {
    malloc_tuning::limit_arenas();
    let cli = mailroom::cli::Cli::parse();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(mailroom::cli::main(cli)),
        Err(e) => {
            eprintln!("mailroom: error: starting the async runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
