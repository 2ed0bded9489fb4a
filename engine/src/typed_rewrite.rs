//! What the arithmetic rules share (`checked`, `decimal_arith`): every expression of a
//! logical plan and its subqueries rewritten bottom-up, names kept, and each node typed once.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, Result};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{Expr, ExprSchemable, LogicalPlan};

/// `plan` with each of its expressions, and those of its subqueries, passed through
/// `rewrite` with the schema they are typed against: a node's inputs (a projection's `a + b`
/// reads its input's columns), or its own schema for leaves such as VALUES. Each expression
/// keeps the name it had.
pub fn rewrite_plan(
    plan: LogicalPlan,
    rewrite: &dyn Fn(Expr, &DFSchema) -> Result<Transformed<Expr>>,
) -> Result<LogicalPlan> {
    Ok(plan
        .transform_up_with_subqueries(|plan| {
            let mut schema = DFSchema::empty();
            for input in plan.inputs() {
                schema.merge(input.schema());
            }
            if plan.inputs().is_empty() {
                schema.merge(plan.schema());
            }
            let names = NamePreserver::new(&plan);
            plan.map_expressions(|expr| {
                let name = names.save(&expr);
                rewrite(expr, &schema).map(|t| t.update_data(|e| name.restore(e)))
            })?
            .map_data(|plan| plan.recompute_schema())
        })?
        .data)
}

/// `expr` rewritten bottom-up by `step`, which gets each node with the types of its operands
/// that `step` itself gave them (None where it gave none) and returns the node, rewritten or
/// not, with its type if it knows it. The types go up on a stack, so a chain `a + b + … + z`
/// is typed in one pass (typing each operand's whole subtree again at every level made
/// planning cubic in the chain's length: 1,000 terms took minutes).
pub fn typed_transform_up(
    expr: Expr,
    mut step: impl FnMut(Expr, &[Option<DataType>]) -> Result<(Transformed<Expr>, Option<DataType>)>,
) -> Result<Transformed<Expr>> {
    let mut known: Vec<Option<DataType>> = Vec::new();
    expr.transform_up(|e| {
        let mut arity = 0;
        e.apply_children(|_| {
            arity += 1;
            Ok(TreeNodeRecursion::Continue)
        })?;
        let operands = known.split_off(known.len().saturating_sub(arity));
        let (rewritten, typed) = step(e, &operands)?;
        known.push(typed);
        Ok(rewritten)
    })
}

/// The type of operand `i` of a node, `operand`: the one the walk's step gave it, else asked
/// of it against `schema` (None for one that cannot be typed: it is left as it is, and type
/// coercion reports it).
pub fn operand_type(
    operands: &[Option<DataType>],
    i: usize,
    operand: &Expr,
    schema: &DFSchema,
) -> Option<DataType> {
    operands
        .get(i)
        .cloned()
        .flatten()
        .or_else(|| operand.get_type(schema).ok())
}

/// The field a function that stands for an operator returns: `data_type`, null when an input
/// is null, as the operator it replaces.
pub fn operator_field(
    name: &str,
    data_type: DataType,
    args: &datafusion::logical_expr::ReturnFieldArgs,
) -> datafusion::arrow::datatypes::FieldRef {
    let nullable = args.arg_fields.iter().any(|f| f.is_nullable());
    std::sync::Arc::new(datafusion::arrow::datatypes::Field::new(
        name, data_type, nullable,
    ))
}
