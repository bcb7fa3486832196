//! The plan's JWT secrets, one per consensus↔execution pair: made where missing (0600 in a
//! 0700 dir, never printed) and checked pair by pair for the report and `secrets verify`.

use anyhow::{Context as _, Result};
use tracing::info;

use crate::layout::Layout;
use crate::plan::Plan;

/// Creates every missing JWT secret of the plan (0600 in a 0700 dir); never prints them.
pub fn ensure_secrets(plan: &Plan) -> Result<()> {
    if !plan.jwt_pairs.is_empty() {
        let dir = Layout::new(&plan.state_dir).secrets_dir();
        chainctl_common::fs::private_dir(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    for pair in &plan.jwt_pairs {
        if chainctl_common::secrets::ensure(&pair.path)
            .with_context(|| format!("cannot write {}", pair.path.display()))?
        {
            info!(path = %pair.path.display(), consensus = %pair.consensus, execution = %pair.execution, "generated JWT secret");
        }
    }
    Ok(())
}

/// Every problem with one consensus↔execution pair's secret: the file itself (content,
/// modes), and each end that never passes it to its program.
pub fn pair_problems(plan: &crate::plan::Plan, pair: &crate::plan::JwtPair) -> Vec<String> {
    let mut problems: Vec<String> = chainctl_common::secrets::verify_file(&pair.path)
        .into_iter()
        .map(|e| e.to_string())
        .collect();
    let path = pair.path.display().to_string();
    for end in [&pair.consensus, &pair.execution] {
        let Some(s) = plan.service(end) else { continue };
        // A validator reads its secrets from the config.json chainctl writes for it.
        let in_config = || {
            std::fs::read_to_string(s.data_dir.join("config.json"))
                .is_ok_and(|c| c.contains(&serde_json::to_string(&path).unwrap_or_default()))
        };
        if !s
            .argv
            .iter()
            .chain(s.env.values())
            .any(|a| a.contains(&path))
            && !in_config()
        {
            problems.push(format!(
                "service `{end}` never passes {path} to its program: add {{{{jwt_path}}}} to services.{end}.command or env, or both ends will not share the secret"
            ));
        }
    }
    problems
}
