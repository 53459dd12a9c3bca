//! `epicctl render`: render a gateway template into Envoy resources (epic-templates).

use std::path::{Path, PathBuf};

use epic_templates::translate::{GatewayInputs, Route, translate};
use epic_templates::validate::{EnvoyValidator, check_consistency};
use epic_templates::{BUILTIN_TEMPLATES, GatewayTemplate, Renderer};

/// Output format of the rendered resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// YAML.
    Yaml,
    /// JSON (pretty).
    Json,
}

/// Render a gateway template into Envoy resources.
#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    /// A built-in template (tcp, udp, http, https) or a template file.
    #[arg(long)]
    template: String,
    /// A DNS name template file (for a template file).
    #[arg(long)]
    dns_name_template: Option<PathBuf>,
    /// The gateway: identity, addresses, listeners, backends (YAML).
    #[arg(long)]
    gateway: PathBuf,
    /// HTTPRoute/TCPRoute/UDPRoute documents (YAML, `---` separated).
    #[arg(long)]
    routes: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Yaml)]
    output: OutputFormat,
    /// Also validate the result with real Envoy (`$EPIC_ENVOY` or `envoy`).
    #[arg(long)]
    validate: bool,
}

fn read(path: &Path) -> Result<String, Box<dyn std::error::Error>> {
    std::fs::read_to_string(path)
        .map_err(|err| format!("cannot read {}: {err}", path.display()).into())
}

/// Runs `epicctl render`.
pub fn run(args: RenderArgs) -> Result<(), Box<dyn std::error::Error>> {
    let inputs: GatewayInputs = serde_yaml_ng::from_str(&read(&args.gateway)?)
        .map_err(|err| format!("{}: {err}", args.gateway.display()))?;
    let routes = match &args.routes {
        Some(path) => {
            Route::from_yaml(&read(path)?).map_err(|err| format!("{}: {err}", path.display()))?
        }
        None => Vec::new(),
    };
    let mut renderer = Renderer::new();
    let name = if BUILTIN_TEMPLATES.contains(&args.template.as_str()) {
        args.template.clone()
    } else {
        let path = Path::new(&args.template);
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("template")
            .to_owned();
        let dns_name = args.dns_name_template.as_deref().map(read).transpose()?;
        renderer.add_template(&GatewayTemplate {
            name: name.clone(),
            envoy: read(path)?,
            dns_name,
        })?;
        name
    };

    let translation = translate(&inputs, &routes);
    for report in &translation.reports {
        for issue in &report.issues {
            let rule = issue.rule.map(|r| format!(" rule {r}")).unwrap_or_default();
            eprintln!(
                "warning: {} {}/{}{rule}: {:?}: {}",
                report.kind, report.namespace, report.name, issue.reason, issue.message
            );
        }
    }
    let rendered = renderer.render(&name, &translation.context)?;
    check_consistency(&rendered.resources)?;
    if args.validate {
        EnvoyValidator::from_env().validate(&rendered.resources)?;
    }
    if !rendered.dns_name.is_empty() {
        eprintln!("dns name: {}", rendered.dns_name);
    }
    let document = rendered.resources.to_json();
    match args.output {
        OutputFormat::Yaml => print!("{}", epic_templates::to_yaml(&document)),
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&document)?),
    }
    Ok(())
}
