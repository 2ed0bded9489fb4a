//! Cutting the physical plan into stages that run on executors.
//!
//! DataFusion's plan is walked bottom-up. Everything that can run partition by partition next
//! to an Iceberg scan is *on the executors*; the plan is cut where data must move:
//!
//! * a hash `RepartitionExec` (under a partitioned join or a final aggregation) becomes a
//!   **hash shuffle**: its input runs as a producer stage whose tasks split their rows into
//!   buckets, and the consumers above read bucket `j` of every producer (executor to executor);
//! * the build side of a `CollectLeft` hash join (DataFusion chose it because Iceberg's row
//!   counts put that side under its broadcast threshold), a cross join or a nested-loop join
//!   becomes a **broadcast**: every probe task reads the whole build side from its producers;
//! * where the executors' share ends (a merge, a final aggregation over one partition, a
//!   global limit, a union, …) a [`RemoteStageExec`] **gathers** the tasks' output on the
//!   coordinator.
//!
//! Every shuffle is pipelined through bounded in-memory buckets (see `floe_engine::shuffle`).

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex};

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::{
    CrossJoinExec, HashJoinExec, NestedLoopJoinExec, PartitionMode,
};
use datafusion::physical_plan::limit::LocalLimitExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowAggExec};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use floe_engine::distinct_keys::DistinctKeysExec;
use floe_engine::runtime_filter::{RuntimeFilterExec, RuntimeFilterSourceExec};
use floe_engine::shuffle::ShuffleReaderExec;
use floe_engine::write::IcebergWriteExec;
use floe_engine::IcebergScanExec;
use floe_proto::{FileGroup, ShuffleOutput, ShuffleReaderNode};
use tracing::warn;

use crate::broadcast::probe_driven;
use crate::registry::ExecutorRegistry;
use crate::remote::RemoteStageExec;
use crate::runtime_filters::with_runtime_filter;
use crate::scheduler::{format_reports, GatherStage, QueryRun, ShuffleStage};
use crate::shared_stages::{node_key, share_repeated_shuffles};

/// Where a shuffle stage's output is read: on the coordinator it shows the producer stage as
/// its child; sent to an executor it becomes a [`ShuffleReaderExec`].
#[derive(Debug, Clone)]
pub struct ShuffleExchangeExec {
    stage: Arc<ShuffleStage>,
    reader: Arc<ShuffleReaderExec>,
    properties: Arc<PlanProperties>,
    /// Why and how data moves, for EXPLAIN.
    choice: String,
}

impl ShuffleExchangeExec {
    /// The stage it reads.
    pub fn stage(&self) -> &Arc<ShuffleStage> {
        &self.stage
    }
}

impl DisplayAs for ShuffleExchangeExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ShuffleExchangeExec: stage={}, {}, tasks={}, plan_bytes={}",
            self.stage.stage_id,
            self.choice,
            self.stage.tasks,
            self.stage.encoded.len()
        )?;
        if self.stage.is_shared() {
            write!(
                f,
                ", read by {} parts of the plan (this one: reader {})",
                self.stage.readers(),
                self.reader.node().reader
            )?;
        }
        if let Some(reports) = format_reports(&self.stage.reports) {
            write!(f, ", {reports}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for ShuffleExchangeExec {
    fn name(&self) -> &str {
        "ShuffleExchangeExec"
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.stage.plan]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match children.as_slice() {
            [only] if Arc::ptr_eq(only, &self.stage.plan) => Ok(self),
            _ => Err(DataFusionError::Internal(
                "a shuffle stage's plan is fixed once encoded".into(),
            )),
        }
    }

    fn execute(
        &self,
        _partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        Err(DataFusionError::Internal(format!(
            "shuffle stage {} is read by executors, not by the coordinator",
            self.stage.stage_id
        )))
    }
}

/// Where a rewritten subtree runs.
enum Placement {
    /// On executors, partition by partition; reading these shuffle stages.
    Executors(Vec<Arc<ShuffleStage>>),
    /// On the coordinator.
    Coordinator,
}

datafusion::common::extensions_options! {
    /// What the stage cutter needs of the query whose plan it cuts, in the query's session
    /// config: one session state serves many queries (see `crate::session`), each with its own.
    pub struct QueryOptions {
        /// The query's id (its stages and tasks are named by it).
        pub query_id: String, default = String::new()
        /// The most memory the query may hold on each executor (0: the executor's limit).
        pub memory_limit: u64, default = 0
        /// The statement is `EXPLAIN ANALYZE`: its gathers wait for every task's report.
        pub explain_analyze: bool, default = false
    }
}

impl datafusion::common::config::ConfigExtension for QueryOptions {
    const PREFIX: &'static str = "floe_query";
}

/// The physical optimizer rule that cuts a query's plan into stages; the query is the one its
/// session's [`QueryOptions`] name.
#[derive(Debug)]
pub struct PlanStages {
    registry: ExecutorRegistry,
}

struct Cutter {
    /// The run this plan's stages are scheduled in: one per cut plan, so that stage ids (which
    /// restart at 1 in every cut) never name another plan's running stages.
    run: Arc<QueryRun>,
    next_stage: u32,
    /// The executor slot the next stage's first task goes to: the tasks of a query take the
    /// executors' slots in turn (see `crate::scheduler`'s placement).
    next_slot: usize,
    /// The shuffle stages each runtime filter is applied in (see `crate::runtime_filters`),
    /// by filter id: cut before the join whose build side publishes the keys.
    filter_targets: HashMap<u64, Vec<u32>>,
    /// Every stage cut so far, by id.
    cut: HashMap<u32, Arc<ShuffleStage>>,
    /// The hash shuffles more than one part of the plan reads (see `crate::shared_stages`),
    /// by [`node_key`], and the exchange of each once its stage is cut.
    shared: HashSet<usize>,
    staged: HashMap<usize, ShuffleExchangeExec>,
}

impl PlanStages {
    /// The rule for queries run on the executors in `registry`.
    pub fn new(registry: ExecutorRegistry) -> Self {
        Self { registry }
    }
}

impl Cutter {
    fn place(
        &mut self,
        plan: Arc<dyn ExecutionPlan>,
    ) -> Result<(Arc<dyn ExecutionPlan>, Placement)> {
        let key = node_key(&plan);
        if let Some(first) = self.staged.get(&key) {
            // A shared shuffle read once more: the same stage, read as another reader.
            let stage = Arc::clone(first.stage());
            let exchange = ShuffleExchangeExec {
                reader: Arc::new(first.reader.for_reader(stage.add_reader())?),
                stage: Arc::clone(&stage),
                properties: Arc::clone(&first.properties),
                choice: first.choice.clone(),
            };
            return Ok((Arc::new(exchange), Placement::Executors(vec![stage])));
        }
        let shared = &self.shared;
        let plan = match with_runtime_filter(&plan, &runs_on_executors, &|p| {
            shared.contains(&node_key(p))
        })? {
            Some(filtered) => filtered,
            None => plan,
        };
        let any = plan.as_any();
        if any.is::<IcebergScanExec>() {
            return Ok((plan, Placement::Executors(vec![])));
        }
        if is_broadcast_join(plan.as_ref()) {
            return self.broadcast_join(plan);
        }
        let children: Vec<Arc<dyn ExecutionPlan>> = plan.children().into_iter().cloned().collect();
        if children.is_empty() {
            return Ok((plan, Placement::Coordinator));
        }
        let mut placed = Vec::with_capacity(children.len());
        for child in children {
            placed.push(self.place(child)?);
        }
        let is_hash_shuffle = any.downcast_ref::<RepartitionExec>().is_some_and(|r| {
            matches!(r.partitioning(), Partitioning::Hash(..)) && !r.preserve_order()
        });
        if is_hash_shuffle && matches!(placed.as_slice(), [(_, Placement::Executors(_))]) {
            if let Some((child, Placement::Executors(inputs))) = placed.pop() {
                let (exchange, placement) = self.hash_shuffle(plan, child, inputs)?;
                if self.shared.contains(&key) {
                    if let Some(e) = exchange.as_any().downcast_ref::<ShuffleExchangeExec>() {
                        e.stage.add_reader();
                        self.staged.insert(key, e.clone());
                    }
                }
                return Ok((exchange, placement));
            }
        }
        let all_on_executors = placed
            .iter()
            .all(|(_, p)| matches!(p, Placement::Executors(_)));
        if all_on_executors && is_partition_local(plan.as_ref()) {
            let mut stages = Vec::new();
            let mut children = Vec::new();
            for (child, placement) in placed {
                if let Placement::Executors(s) = placement {
                    stages.extend(s);
                }
                children.push(child);
            }
            return Ok((
                plan.with_new_children(children)?,
                Placement::Executors(stages),
            ));
        }
        let children = placed
            .into_iter()
            .map(|(child, placement)| self.gather(child, placement))
            .collect::<Result<Vec<_>>>()?;
        Ok((plan.with_new_children(children)?, Placement::Coordinator))
    }

    /// The producer's input runs as a stage whose tasks hash-split their rows into the
    /// repartition's buckets.
    fn hash_shuffle(
        &mut self,
        repartition: Arc<dyn ExecutionPlan>,
        input: Arc<dyn ExecutionPlan>,
        inputs: Vec<Arc<ShuffleStage>>,
    ) -> Result<(Arc<dyn ExecutionPlan>, Placement)> {
        let tasks = partitions(&input);
        let producer = Arc::clone(&repartition).with_new_children(vec![input])?;
        let buckets = partitions(&repartition);
        let choice = match repartition.properties().output_partitioning() {
            Partitioning::Hash(exprs, n) => {
                let exprs: Vec<String> = exprs.iter().map(|e| e.to_string()).collect();
                format!("hash([{}], {n})", exprs.join(", "))
            }
            other => other.to_string(),
        };
        let stage = self.stage(
            producer,
            inputs,
            ShuffleOutput {
                buckets: buckets as u32,
                broadcast: false,
                readers: 1,
            },
            tasks,
        )?;
        let exchange = self.exchange(
            stage,
            Arc::clone(repartition.properties()),
            buckets,
            false,
            choice,
        )?;
        let stages = vec![Arc::clone(exchange.stage())];
        Ok((Arc::new(exchange), Placement::Executors(stages)))
    }

    /// A join whose build side every probe task needs whole: the build side becomes a
    /// broadcast stage when both sides can run on executors.
    fn broadcast_join(
        &mut self,
        join: Arc<dyn ExecutionPlan>,
    ) -> Result<(Arc<dyn ExecutionPlan>, Placement)> {
        let children: Vec<Arc<dyn ExecutionPlan>> = join.children().into_iter().cloned().collect();
        let [build, probe] = children.as_slice() else {
            return Err(DataFusionError::Internal("a join has two inputs".into()));
        };
        // A runtime filter's source stays in the join's tasks, over the broadcast's reader: it
        // publishes the keys each task holds.
        let source = build
            .as_any()
            .is::<RuntimeFilterSourceExec>()
            .then(|| Arc::clone(build));
        let build = match &source {
            Some(s) => Arc::clone(s.children()[0]),
            None => Arc::clone(build),
        };
        let build = &build;
        // A coalesce with a fetch (a LIMIT) must stay: broadcasting its input would drop it.
        let coalesce = build
            .as_any()
            .downcast_ref::<CoalescePartitionsExec>()
            .filter(|c| c.fetch().is_none());
        let build_input = match coalesce {
            Some(c) => Arc::clone(c.input()),
            None => Arc::clone(build),
        };
        // The optimizer's estimate, for EXPLAIN (`crate::broadcast` chose by it).
        let probe_rows = probe
            .partition_statistics(None)
            .ok()
            .and_then(|s| s.num_rows.get_value().copied());
        let (probe, probe_placement) = self.place(Arc::clone(probe))?;
        let (build_input, build_placement) = self.place(build_input)?;
        match (build_placement, probe_placement) {
            (Placement::Executors(build_stages), Placement::Executors(mut stages)) => {
                let consumers = partitions(&probe);
                let rows = build
                    .partition_statistics(None)
                    .ok()
                    .and_then(|s| s.num_rows.get_value().copied());
                let estimate = |rows: Option<usize>| match rows {
                    Some(r) => format!("≈{r} rows"),
                    None => "of unknown size".to_string(),
                };
                let choice = format!(
                    "broadcast to {consumers} task(s), build side {}, probe side {}",
                    estimate(rows),
                    estimate(probe_rows)
                );
                let tasks = partitions(&build_input);
                let stage = self.stage(
                    build_input,
                    build_stages,
                    ShuffleOutput {
                        buckets: consumers as u32,
                        broadcast: true,
                        readers: 1,
                    },
                    tasks,
                )?;
                let exchange =
                    self.exchange(stage, Arc::clone(build.properties()), 1, true, choice)?;
                stages.push(Arc::clone(exchange.stage()));
                let exchange: Arc<dyn ExecutionPlan> = Arc::new(exchange);
                let build = match source {
                    Some(s) => s.with_new_children(vec![exchange])?,
                    None => exchange,
                };
                let join = join.with_new_children(vec![build, probe])?;
                Ok((join, Placement::Executors(stages)))
            }
            (build_placement, probe_placement) => {
                let build_input = self.gather(build_input, build_placement)?;
                let build = match coalesce {
                    Some(_) => Arc::clone(build).with_new_children(vec![build_input])?,
                    None => build_input,
                };
                let probe = self.gather(probe, probe_placement)?;
                Ok((
                    join.with_new_children(vec![build, probe])?,
                    Placement::Coordinator,
                ))
            }
        }
    }

    /// Encodes a producer stage.
    fn stage(
        &mut self,
        plan: Arc<dyn ExecutionPlan>,
        inputs: Vec<Arc<ShuffleStage>>,
        output: ShuffleOutput,
        tasks: usize,
    ) -> Result<Arc<ShuffleStage>> {
        let plan = with_filter_targets(plan, &self.filter_targets)?;
        let inputs = self.with_targeted_stages(&plan, inputs);
        let (encoded, files) = encode_fragment(&plan)?;
        self.next_stage += 1;
        for filter in runtime_filters_in(&plan) {
            self.filter_targets
                .entry(filter)
                .or_default()
                .push(self.next_stage);
        }
        let first_slot = self.next_slot;
        self.next_slot += tasks;
        let stage = Arc::new(ShuffleStage {
            stage_id: self.next_stage,
            plan,
            encoded: Arc::new(encoded),
            files: Arc::new(files),
            tasks,
            first_slot,
            output,
            inputs,
            reports: Mutex::default(),
            readers: AtomicU32::new(0),
        });
        self.cut.insert(stage.stage_id, Arc::clone(&stage));
        Ok(stage)
    }

    /// `inputs` and the stages the fragment's runtime filters send their keys to that are not
    /// among them: a filter pushed into a broadcast build side (see `crate::runtime_filters`)
    /// may sit in a stage that one of `inputs` reads, and a task is told where its inputs'
    /// tasks run, not theirs.
    fn with_targeted_stages(
        &self,
        fragment: &Arc<dyn ExecutionPlan>,
        mut inputs: Vec<Arc<ShuffleStage>>,
    ) -> Vec<Arc<ShuffleStage>> {
        for target in filter_targets_of(fragment) {
            if inputs.iter().all(|s| s.stage_id != target) {
                if let Some(stage) = self.cut.get(&target) {
                    inputs.push(Arc::clone(stage));
                }
            }
        }
        inputs
    }

    fn exchange(
        &self,
        stage: Arc<ShuffleStage>,
        properties: Arc<PlanProperties>,
        partitions: usize,
        broadcast: bool,
        choice: String,
    ) -> Result<ShuffleExchangeExec> {
        let schema = stage.plan.schema();
        let reader = ShuffleReaderExec::try_new(ShuffleReaderNode {
            stage_id: stage.stage_id,
            schema: floe_engine::ipc::encode_schema(&schema)?,
            partitions: partitions as u32,
            broadcast,
            bucket: 0,
            reader: 0,
        })?;
        Ok(ShuffleExchangeExec {
            stage,
            reader: Arc::new(reader),
            properties,
            choice,
        })
    }

    /// Wraps what runs on executors so that the coordinator reads its tasks' output.
    fn gather(
        &mut self,
        plan: Arc<dyn ExecutionPlan>,
        placement: Placement,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Placement::Executors(inputs) = placement else {
            return Ok(plan);
        };
        let plan = with_filter_targets(plan, &self.filter_targets)?;
        let inputs = self.with_targeted_stages(&plan, inputs);
        match encode_fragment(&plan) {
            Ok((encoded, files)) => {
                self.next_stage += 1;
                let first_slot = self.next_slot;
                self.next_slot += partitions(&plan);
                let stage = GatherStage {
                    stage_id: self.next_stage,
                    plan: Arc::new(encoded),
                    files,
                    first_slot,
                    inputs,
                };
                Ok(Arc::new(RemoteStageExec::new(
                    plan,
                    stage,
                    Arc::clone(&self.run),
                )))
            }
            Err(e) if inputs.is_empty() => {
                warn!("fragment stays on the coordinator: {e}");
                Ok(plan)
            }
            Err(e) => Err(e),
        }
    }
}

fn partitions(plan: &Arc<dyn ExecutionPlan>) -> usize {
    plan.properties().output_partitioning().partition_count()
}

/// A fragment whose runtime filter sources know the stages their keys go to (cut before them).
fn with_filter_targets(
    fragment: Arc<dyn ExecutionPlan>,
    filter_targets: &HashMap<u64, Vec<u32>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let plan = fragment.transform_down(|node| {
        if node.as_any().is::<ShuffleExchangeExec>() {
            return Ok(Transformed::new(
                node,
                false,
                datafusion::common::tree_node::TreeNodeRecursion::Jump,
            ));
        }
        let Some(source) = node.as_any().downcast_ref::<RuntimeFilterSourceExec>() else {
            return Ok(Transformed::no(node));
        };
        let targets = filter_targets
            .get(&source.node().filter_id)
            .cloned()
            .unwrap_or_default();
        Ok(Transformed::yes(
            Arc::new(source.with_targets(targets)) as Arc<dyn ExecutionPlan>
        ))
    })?;
    Ok(plan.data)
}

/// The fragment as executors receive it: shuffle exchanges become readers, the scan's files
/// are taken out (each task gets its own next to the plan); and those files per partition.
fn encode_fragment(fragment: &Arc<dyn ExecutionPlan>) -> Result<(Vec<u8>, Vec<FileGroup>)> {
    let mut files = Vec::new();
    let plan = Arc::clone(fragment).transform_down(|node| {
        if let Some(exchange) = node.as_any().downcast_ref::<ShuffleExchangeExec>() {
            let reader = Arc::clone(&exchange.reader) as Arc<dyn ExecutionPlan>;
            return Ok(Transformed::new(
                reader,
                true,
                datafusion::common::tree_node::TreeNodeRecursion::Jump,
            ));
        }
        let Some(scan) = node.as_any().downcast_ref::<IcebergScanExec>() else {
            return Ok(Transformed::no(node));
        };
        if !files.is_empty() {
            return Err(DataFusionError::NotImplemented(
                "a fragment with two table scans".into(),
            ));
        }
        files = scan.node().file_groups.clone();
        Ok(Transformed::yes(
            Arc::new(scan.without_files()?) as Arc<dyn ExecutionPlan>
        ))
    })?;
    Ok((floe_engine::codec::encode_plan(plan.data)?, files))
}

/// The stages the runtime filter sources of a fragment (not of the stages it reads) send to.
fn filter_targets_of(plan: &Arc<dyn ExecutionPlan>) -> Vec<u32> {
    in_fragment(plan, &|node| {
        node.as_any()
            .downcast_ref::<RuntimeFilterSourceExec>()
            .map(|s| s.node().targets.clone())
            .unwrap_or_default()
    })
}

/// The runtime filters applied in a stage's own fragment (not in the stages it reads).
fn runtime_filters_in(plan: &Arc<dyn ExecutionPlan>) -> Vec<u64> {
    in_fragment(plan, &|node| {
        node.as_any()
            .downcast_ref::<RuntimeFilterExec>()
            .map(|f| vec![f.node().filter_id])
            .unwrap_or_default()
    })
}

/// What `pick` finds in the nodes of a fragment, above the exchanges of the stages it reads.
fn in_fragment<T>(
    plan: &Arc<dyn ExecutionPlan>,
    pick: &dyn Fn(&Arc<dyn ExecutionPlan>) -> Vec<T>,
) -> Vec<T> {
    if plan.as_any().is::<ShuffleExchangeExec>() {
        return Vec::new();
    }
    let mut found = pick(plan);
    for child in plan.children() {
        found.extend(in_fragment(child, pick));
    }
    found
}

/// Whether [`Cutter::place`] puts `plan` on executors (the same walk, without cutting).
fn runs_on_executors(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let any = plan.as_any();
    if any.is::<IcebergScanExec>() {
        return true;
    }
    let children = plan.children();
    if is_broadcast_join(plan.as_ref()) {
        let [build, probe] = children.as_slice() else {
            return false;
        };
        let build_input = match build
            .as_any()
            .downcast_ref::<CoalescePartitionsExec>()
            .filter(|c| c.fetch().is_none())
        {
            Some(c) => c.input(),
            None => build,
        };
        return runs_on_executors(build_input) && runs_on_executors(probe);
    }
    if children.is_empty() {
        return false;
    }
    let all = children.iter().all(|c| runs_on_executors(c));
    let is_hash_shuffle = any
        .downcast_ref::<RepartitionExec>()
        .is_some_and(|r| matches!(r.partitioning(), Partitioning::Hash(..)) && !r.preserve_order());
    all && (is_hash_shuffle || is_partition_local(plan.as_ref()))
}

/// Joins that read all of their build (left) side in every partition and emit only rows driven
/// by the probe side, so every probe task can join against its own copy of the build side.
fn is_broadcast_join(plan: &dyn ExecutionPlan) -> bool {
    let any = plan.as_any();
    if let Some(join) = any.downcast_ref::<HashJoinExec>() {
        return *join.partition_mode() == PartitionMode::CollectLeft
            && probe_driven(join.join_type());
    }
    if let Some(join) = any.downcast_ref::<NestedLoopJoinExec>() {
        return probe_driven(join.join_type());
    }
    any.is::<CrossJoinExec>()
}

/// Operators that work on each partition alone, so they run in the tasks of their input.
fn is_partition_local(plan: &dyn ExecutionPlan) -> bool {
    let any = plan.as_any();
    if any.is::<FilterExec>()
        || any.is::<ProjectionExec>()
        || any.is::<LocalLimitExec>()
        || any.is::<CooperativeExec>()
        || any.is::<BoundedWindowAggExec>()
        || any.is::<WindowAggExec>()
        || any.is::<IcebergWriteExec>()
        || any.is::<RuntimeFilterExec>()
        || any.is::<RuntimeFilterSourceExec>()
        || any.is::<DistinctKeysExec>()
    {
        return true;
    }
    if let Some(agg) = any.downcast_ref::<AggregateExec>() {
        return matches!(
            agg.mode(),
            AggregateMode::Partial
                | AggregateMode::FinalPartitioned
                | AggregateMode::SinglePartitioned
        );
    }
    if let Some(sort) = any.downcast_ref::<SortExec>() {
        return sort.preserve_partitioning();
    }
    if let Some(join) = any.downcast_ref::<HashJoinExec>() {
        return *join.partition_mode() == PartitionMode::Partitioned;
    }
    false
}

impl PhysicalOptimizerRule for PlanStages {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let query = config.extensions.get::<QueryOptions>().ok_or_else(|| {
            DataFusionError::Internal("a query's session names no query to cut stages for".into())
        })?;
        let run = QueryRun::new(
            query.query_id.clone(),
            query.memory_limit,
            self.registry.clone(),
        );
        // EXPLAIN ANALYZE prints the plan when its input ends: every task's report must be in.
        let run = if query.explain_analyze {
            run.waiting_for_reports()
        } else {
            run
        };
        let (plan, shared) = share_repeated_shuffles(plan)?;
        let mut cutter = Cutter {
            run: Arc::new(run),
            next_stage: 0,
            next_slot: 0,
            filter_targets: HashMap::new(),
            cut: HashMap::new(),
            shared,
            staged: HashMap::new(),
        };
        let (plan, placement) = cutter.place(plan)?;
        // The coordinator's own share yields too (executors wrap their fragments' joins).
        floe_engine::cooperative::yielding_joins_until(cutter.gather(plan, placement)?, &|node| {
            node.as_any().is::<RemoteStageExec>() || node.as_any().is::<ShuffleExchangeExec>()
        })
    }

    fn name(&self) -> &str {
        "floe_plan_stages"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
