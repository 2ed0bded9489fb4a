//! Session states kept by settings: building one registers every DataFusion function (9 % of a
//! `SELECT 1`), so each statement's session is a copy of one kept for its settings (see
//! `QueryEngine::session`, which gives each copy its own catalog list, execution properties
//! and query options).

use std::sync::Arc;

use datafusion::execution::SessionState;

use crate::settings::Settings;

/// Session states kept by the settings they were made for (schema, time zone, file size) and
/// the stages' task count, at most [`MAX_TEMPLATES`], the oldest out first.
#[derive(Default, Clone)]
pub(crate) struct StateTemplates {
    kept: Arc<std::sync::Mutex<std::collections::VecDeque<(Settings, usize, SessionState)>>>,
}

/// Session states kept at most.
const MAX_TEMPLATES: usize = 16;

impl std::fmt::Debug for StateTemplates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateTemplates").finish_non_exhaustive()
    }
}

impl StateTemplates {
    /// A copy of the state kept for `settings` and `target_partitions`, made by `build` (and
    /// kept) if there is none.
    pub(crate) fn get_or_build(
        &self,
        settings: &Settings,
        target_partitions: usize,
        build: impl FnOnce() -> SessionState,
    ) -> SessionState {
        let mut key = settings.clone();
        // What the state does not depend on.
        key.memory_limit = None;
        {
            let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((_, _, state)) = kept
                .iter()
                .find(|(s, n, _)| *s == key && *n == target_partitions)
            {
                return state.clone();
            }
        }
        let state = build();
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() >= MAX_TEMPLATES {
            kept.pop_front();
        }
        kept.push_back((key, target_partitions, state.clone()));
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::catalog::MemoryCatalogProviderList;
    use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider};
    use datafusion::execution::SessionStateBuilder;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn a_state_is_built_once_per_settings_and_each_copy_has_its_own_catalog() {
        let templates = StateTemplates::default();
        let built = AtomicU64::new(0);
        let build = || {
            built.fetch_add(1, Ordering::Relaxed);
            SessionStateBuilder::new().with_default_features().build()
        };
        let plain = Settings::default();
        let mut first = templates.get_or_build(&plain, 4, build);
        let mut second = templates.get_or_build(&plain, 4, build);
        assert_eq!(built.load(Ordering::Relaxed), 1, "the second is a copy");
        // What `QueryEngine::session` does to each copy: its own catalog list.
        for state in [&mut first, &mut second] {
            state.register_catalog_list(Arc::new(MemoryCatalogProviderList::new()));
        }
        first.catalog_list().register_catalog(
            "floe".into(),
            Arc::new(MemoryCatalogProvider::new()) as Arc<dyn CatalogProvider>,
        );
        assert!(second.catalog_list().catalog("floe").is_none());
        let kept = templates.get_or_build(&plain, 4, build);
        assert!(kept.catalog_list().catalog("floe").is_none());
        // Other settings, or another task count, make another state; a memory limit does not.
        let mut berlin = plain.clone();
        berlin.time_zone = Some("Europe/Berlin".into());
        templates.get_or_build(&berlin, 4, build);
        templates.get_or_build(&plain, 8, build);
        assert_eq!(built.load(Ordering::Relaxed), 3);
        let mut limited = plain.clone();
        limited.memory_limit = Some(1 << 30);
        templates.get_or_build(&limited, 4, build);
        assert_eq!(built.load(Ordering::Relaxed), 3);
        for n in 0..MAX_TEMPLATES + 2 {
            templates.get_or_build(&plain, 100 + n, build);
        }
        assert!(templates.kept.lock().map(|k| k.len()).unwrap_or(0) <= MAX_TEMPLATES);
    }
}
