use clap::Parser;

fn main() -> std::process::ExitCode {
    // `calico-medic runtime …` (Docker's runtimes, daemon.json): a runc wrapper that gets
    // runc's arguments as they come, before clap (runc's `--log-format` is not ours).
    if let Some(args) = calico_medic::hook::runtime::invoked_as_runtime() {
        return calico_medic::hook::runtime::run(args);
    }
    calico_medic::cli::Cli::parse().exec()
}
