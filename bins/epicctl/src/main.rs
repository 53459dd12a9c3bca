//! `epicctl`: the EPIC-RS operator command line.
//!
//! Each subcommand is thin wiring around a library crate; its logic lives in
//! the crate, this binary only parses arguments and prints results.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod gue;
mod input;
mod ipam;
mod plan;
mod render;
mod route;
mod xds;

/// EPIC-RS operator command line.
#[derive(Debug, Parser)]
#[command(name = "epicctl", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Decode and encode GUE packets (epic-gue).
    #[command(subcommand)]
    Gue(gue::GueCommand),
    /// Check address pools and dry-run allocations (epic-ipam).
    #[command(subcommand)]
    Ipam(ipam::IpamCommand),
    /// Show owned routes and generate the BIRD 2 configuration (epic-route).
    #[command(subcommand)]
    Route(route::RouteCommand),
    /// Render a gateway template into Envoy resources (epic-templates).
    Render(render::RenderArgs),
    /// Show the state of an xDS control plane (epic-xds admin endpoint).
    #[command(subcommand)]
    Xds(xds::XdsCommand),
    /// Plan a resources file as a dry run: statuses, tunnels, endpoints (epic-engine).
    Plan(plan::PlanArgs),
    /// Print the CustomResourceDefinitions of the gateway platform (YAML).
    Crds,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Gue(cmd) => gue::run(cmd),
        Command::Ipam(cmd) => ipam::run(cmd),
        Command::Route(cmd) => route::run(cmd),
        Command::Render(args) => render::run(args),
        Command::Xds(cmd) => xds::run(cmd),
        Command::Plan(args) => plan::run(args),
        Command::Crds => plan::crds(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("epicctl: {err}");
            let mut source = err.source();
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}
