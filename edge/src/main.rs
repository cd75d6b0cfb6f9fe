//! `ccedge`: the contact-centre edge agent (daemon and technician CLI). See the `edge`
//! library docs for the layout.

fn main() -> std::process::ExitCode {
    edge::cli::main()
}
