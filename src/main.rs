use clap::Parser;

fn main() -> std::process::ExitCode {
    calico_medic::cli::Cli::parse().exec()
}
