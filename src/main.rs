use clap::Parser;

fn main() -> std::process::ExitCode {
    tollgate::alloc::limit_arenas();
    match tollgate::cli::run(tollgate::cli::Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tollgate: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
