//! Stage two's first half: policy files merged by id into one set of apps, destinations,
//! rules, allows and imports, then made a [`Policy`].

use std::{collections::HashMap, path::PathBuf};

use super::{
    file, Allow, AppDef, AppSet, DestEntry, ImportFormat, LoadError, PendingImport, Policy,
    PolicyFile, Rule, SourceInfo,
};

/// Policy files merged by id, later entries replacing earlier ones in place (one hash
/// look-up per entry: a scan per entry made 100k destinations take 45 s).
#[derive(Default)]
pub(super) struct Merged {
    apps: Vec<AppDef>,
    dests: Vec<(file::RawDestination, String)>,
    rules: Vec<Rule>,
    allows: Vec<Allow>,
    pub(super) imports: Vec<PendingImport>,
    sources: Vec<SourceInfo>,
    allow_user_blocks: bool,
    inspect_plaintext: bool,
    app_ix: HashMap<String, usize>,
    dest_ix: HashMap<String, usize>,
    rule_ix: HashMap<String, usize>,
    allow_ix: HashMap<String, usize>,
    import_ix: HashMap<String, usize>,
}

fn upsert<T>(v: &mut Vec<T>, index: &mut HashMap<String, usize>, id: String, item: T) {
    match index.get(&id) {
        Some(&i) => v[i] = item,
        None => {
            index.insert(id, v.len());
            v.push(item);
        }
    }
}

impl Merged {
    pub(super) fn add_file(&mut self, f: PolicyFile) {
        let mut info = SourceInfo {
            name: f.name.clone(),
            apps: f.raw.app.len(),
            destinations: f.raw.destination.len(),
            rules: f.raw.rule.len(),
            allows: f.raw.allow.len(),
            ..SourceInfo::default()
        };
        for a in f.raw.app {
            upsert(&mut self.apps, &mut self.app_ix, a.id.clone(), a);
        }
        for d in f.raw.destination {
            info.domains += d.domains.len();
            info.cidrs += d.cidrs.len();
            let id = d.id.get_ref().clone();
            upsert(&mut self.dests, &mut self.dest_ix, id, (d, f.name.clone()));
        }
        for r in f.raw.rule {
            let rule = Rule {
                id: r.id.into_inner(),
                apps: r.apps.into_inner(),
                category: r.category.into_inner(),
                company: r.company.map(|c| c.into_inner()),
                destination: r.destination.map(|d| d.into_inner()),
                severity: r.severity,
                action: r.action,
                origin: f.name.clone(),
            };
            upsert(&mut self.rules, &mut self.rule_ix, rule.id.clone(), rule);
        }
        for a in f.raw.allow {
            let allow = Allow {
                id: a.id.into_inner(),
                app: a.app.into_inner(),
                company: a.company.into_inner(),
                origin: f.name.clone(),
            };
            upsert(
                &mut self.allows,
                &mut self.allow_ix,
                allow.id.clone(),
                allow,
            );
        }
        for i in f.raw.import {
            let format = ImportFormat::parse(i.format.get_ref()).expect("validated in stage one");
            let id = i.id.get_ref().clone();
            let item = (
                id.clone(),
                PathBuf::from(i.path.get_ref()),
                format,
                i.category.map(|c| c.into_inner()),
                i.company,
                f.name.clone(),
            );
            upsert(&mut self.imports, &mut self.import_ix, id, item);
        }
        if let Some(v) = f.raw.settings.as_ref().and_then(|s| s.allow_user_blocks) {
            self.allow_user_blocks = v;
        }
        if let Some(v) = f.raw.settings.as_ref().and_then(|s| s.inspect_plaintext) {
            self.inspect_plaintext = v;
        }
        self.sources.push(info);
    }

    /// The policy: apps, destinations in the matcher, then the imported lists read.
    pub(super) fn into_policy(mut self) -> Result<Policy, LoadError> {
        for app in &mut self.apps {
            app.resolve_paths();
        }
        let mut policy = Policy {
            apps: AppSet { apps: self.apps },
            rules: self.rules,
            allows: self.allows,
            allow_user_blocks: self.allow_user_blocks,
            inspect_plaintext: self.inspect_plaintext,
            ..Policy::default()
        };
        for (d, origin) in self.dests {
            policy.add_destination(d, origin);
        }
        let mut patterns = Vec::new();
        for (id, path, format, category, company, origin) in self.imports {
            let info = policy.import(
                &id,
                &path,
                format,
                category,
                company,
                &origin,
                &mut patterns,
            )?;
            self.sources.push(info);
        }
        policy
            .matcher
            .set_patterns(patterns)
            .map_err(|e| LoadError::Import {
                id: "patterns".into(),
                path: String::new(),
                message: e.to_string(),
            })?;
        policy.sources = self.sources;
        Ok(policy)
    }
}

impl Policy {
    /// One destination of a file, with its domains and ranges in the matcher.
    fn add_destination(&mut self, d: file::RawDestination, origin: String) {
        let idx = self.entries.len() as u32;
        self.entries.push(DestEntry {
            id: d.id.get_ref().clone(),
            company: d.company.clone(),
            category: d.category.get_ref().clone(),
            source: d.source.get_ref().clone(),
            origin,
        });
        for dom in &d.domains {
            self.matcher
                .add_domain(dom.get_ref(), idx)
                .expect("validated in stage one");
        }
        for c in &d.cidrs {
            self.matcher
                .add_cidr(c.get_ref(), idx)
                .expect("validated in stage one");
        }
    }
}
