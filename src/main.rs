//! The shipped `mailroom` binary: the built-in handlers and every command. A custom binary is
//! the same line with its own `.handler(..)` and `.sendgrid_hook(..)` calls (see the crate docs).

fn main() -> std::process::ExitCode {
    mailroom::Worker::new().main()
}
