//! The application's worker binary: Mailroom's built-in SendGrid handler and every `mailroom`
//! command, plus this application's orders handler and its bounce hook.

use mailroom::Worker;
use mailroom_example_app::{Orders, Suppressions};

fn main() -> std::process::ExitCode {
    Worker::new()
        .handler("orders", Orders::from_config)
        .sendgrid_hook(Suppressions::from_env())
        .main()
}
