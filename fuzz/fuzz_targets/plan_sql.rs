//! Whatever SQL text a client sends, the coordinator plans it as the server does — limits,
//! parsing, name checks, DataFusion's SQL-to-plan, analysis (with Floe's checked arithmetic),
//! optimisation and physical planning with the stage cutter — on its planning thread, against
//! a real Iceberg SQL catalog holding a few tables of every common type. The answer is a plan or
//! an error; the process never aborts (a stack overflow), hangs or runs out of memory.
//!
//! A panic inside planning is caught by the planning thread and answered INTERNAL (the server
//! lives on), so it is not a finding here: the hook that makes every panic abort is replaced.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use floe_catalog::CatalogSettings;
use floe_coordinator::client_auth::Principal;
use floe_coordinator::registry::ExecutorRegistry;
use floe_coordinator::session::QueryEngine;
use floe_proto::auth::ClusterSecret;
use iceberg::spec::{NestedField, PrimitiveType, Schema, Type};
use iceberg::{Catalog, NamespaceIdent, TableCreation};
use libfuzzer_sys::fuzz_target;

struct Planner {
    runtime: tokio::runtime::Runtime,
    engine: QueryEngine,
    _warehouse: tempfile::TempDir,
}

fn table(
    catalog: &dyn Catalog,
    runtime: &tokio::runtime::Runtime,
    ns: &NamespaceIdent,
    name: &str,
    fields: &[(&str, PrimitiveType, bool)],
) {
    let schema = Schema::builder()
        .with_fields(fields.iter().enumerate().map(|(i, (n, t, required))| {
            Arc::new(NestedField::new(
                i as i32 + 1,
                *n,
                Type::Primitive(t.clone()),
                *required,
            ))
        }))
        .build()
        .expect("schema");
    let creation = TableCreation::builder()
        .name(name.to_string())
        .schema(schema)
        .build();
    runtime
        .block_on(catalog.create_table(ns, creation))
        .expect("create table");
}

fn planner() -> &'static Planner {
    static PLANNER: OnceLock<Planner> = OnceLock::new();
    PLANNER.get_or_init(|| {
        // Planning panics are answered, not crashes (see the module documentation).
        std::panic::set_hook(Box::new(|_| {}));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let warehouse = tempfile::tempdir().expect("temp dir");
        let settings = CatalogSettings::local(warehouse.path());
        let catalog = runtime
            .block_on(floe_catalog::connect(&settings))
            .expect("catalog");
        use PrimitiveType as P;
        for ns in ["tpch", "s"] {
            let ns = NamespaceIdent::new(ns.to_string());
            runtime
                .block_on(catalog.create_namespace(&ns, Default::default()))
                .expect("namespace");
        }
        let tpch = NamespaceIdent::new("tpch".into());
        let money = P::Decimal {
            precision: 15,
            scale: 2,
        };
        let tables: &[(&str, &[(&str, PrimitiveType, bool)])] = &[
            (
                "nation",
                &[
                    ("n_nationkey", P::Long, true),
                    ("n_name", P::String, true),
                    ("n_regionkey", P::Long, true),
                    ("n_comment", P::String, false),
                ],
            ),
            (
                "region",
                &[
                    ("r_regionkey", P::Long, true),
                    ("r_name", P::String, true),
                    ("r_comment", P::String, false),
                ],
            ),
            (
                "part",
                &[
                    ("p_partkey", P::Long, true),
                    ("p_name", P::String, true),
                    ("p_mfgr", P::String, true),
                    ("p_brand", P::String, true),
                    ("p_type", P::String, true),
                    ("p_size", P::Int, true),
                    ("p_container", P::String, true),
                    ("p_retailprice", money.clone(), true),
                    ("p_comment", P::String, true),
                ],
            ),
            (
                "supplier",
                &[
                    ("s_suppkey", P::Long, true),
                    ("s_name", P::String, true),
                    ("s_address", P::String, true),
                    ("s_nationkey", P::Long, true),
                    ("s_phone", P::String, true),
                    ("s_acctbal", money.clone(), true),
                    ("s_comment", P::String, true),
                ],
            ),
            (
                "partsupp",
                &[
                    ("ps_partkey", P::Long, true),
                    ("ps_suppkey", P::Long, true),
                    ("ps_availqty", P::Int, true),
                    ("ps_supplycost", money.clone(), true),
                    ("ps_comment", P::String, true),
                ],
            ),
            (
                "customer",
                &[
                    ("c_custkey", P::Long, true),
                    ("c_name", P::String, true),
                    ("c_address", P::String, true),
                    ("c_nationkey", P::Long, true),
                    ("c_phone", P::String, true),
                    ("c_acctbal", money.clone(), true),
                    ("c_mktsegment", P::String, true),
                    ("c_comment", P::String, true),
                ],
            ),
            (
                "orders",
                &[
                    ("o_orderkey", P::Long, true),
                    ("o_custkey", P::Long, true),
                    ("o_orderstatus", P::String, true),
                    ("o_totalprice", money.clone(), true),
                    ("o_orderdate", P::Date, true),
                    ("o_orderpriority", P::String, true),
                    ("o_clerk", P::String, true),
                    ("o_shippriority", P::Int, true),
                    ("o_comment", P::String, true),
                ],
            ),
            (
                "lineitem",
                &[
                    ("l_orderkey", P::Long, true),
                    ("l_partkey", P::Long, true),
                    ("l_suppkey", P::Long, true),
                    ("l_linenumber", P::Int, true),
                    ("l_quantity", money.clone(), true),
                    ("l_extendedprice", money.clone(), true),
                    ("l_discount", money.clone(), true),
                    ("l_tax", money.clone(), true),
                    ("l_returnflag", P::String, true),
                    ("l_linestatus", P::String, true),
                    ("l_shipdate", P::Date, true),
                    ("l_commitdate", P::Date, true),
                    ("l_receiptdate", P::Date, true),
                    ("l_shipinstruct", P::String, true),
                    ("l_shipmode", P::String, true),
                    ("l_comment", P::String, true),
                ],
            ),
        ];
        for (name, fields) in tables {
            table(&*catalog, &runtime, &tpch, name, fields);
        }
        table(
            &*catalog,
            &runtime,
            &NamespaceIdent::new("s".into()),
            "t",
            &[
                ("b", P::Boolean, false),
                ("i", P::Int, false),
                ("l", P::Long, false),
                ("f", P::Float, false),
                ("d", P::Double, false),
                (
                    "m",
                    P::Decimal {
                        precision: 38,
                        scale: 10,
                    },
                    false,
                ),
                ("dt", P::Date, false),
                ("ts", P::Timestamp, false),
                ("tz", P::Timestamptz, false),
                ("s", P::String, false),
                ("u", P::Uuid, false),
                ("bin", P::Binary, false),
            ],
        );
        let registry = ExecutorRegistry::new(
            Duration::from_secs(1),
            Duration::from_secs(5),
            ClusterSecret::new("fuzzing-cluster-secret").expect("long enough"),
        );
        let env = floe_engine::runtime::runtime_env(256 * 1024 * 1024).expect("runtime env");
        Planner {
            engine: QueryEngine::new(catalog, registry, env),
            runtime,
            _warehouse: warehouse,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    let planner = planner();
    let engine = planner.engine.clone();
    let sql = sql.to_string();
    let _ = planner.runtime.block_on(async move {
        engine
            .plan("fuzz", &sql, vec![], &Principal::anonymous())
            .await
            .map(|_| ())
    });
});
