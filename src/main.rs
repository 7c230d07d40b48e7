use clap::Parser;

fn main() -> std::process::ExitCode {
    match tollgate::cli::run(tollgate::cli::Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tollgate: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
