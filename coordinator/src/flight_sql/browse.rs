//! Browsing the catalog: the metadata commands' FlightInfo and the table listing, whose
//! patterns are applied before any table is loaded.

use super::*;
use floe_engine::status::status_from_catalog;
use floe_engine::FloeError;

impl FloeFlightSql {
    pub(super) fn metadata_info(
        &self,
        command: impl ProstMessageExt,
        schema: &Schema,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let endpoint =
            FlightEndpoint::new().with_ticket(Ticket::new(command.as_any().encode_to_vec()));
        let info = FlightInfo::new()
            .try_with_schema(schema)
            .map_err(ProtocolError::encoding("schema"))?
            .with_endpoint(endpoint)
            .with_descriptor(descriptor);
        Ok(Response::new(info))
    }

    /// Whether the caller is to be told the server is read-only: under `--read-only`, and for
    /// a user who may not write.
    pub(super) fn read_only_for<T>(&self, request: &Request<T>) -> Result<bool, Status> {
        Ok(self.engine.is_read_only() || !Principal::of(request)?.role.may_write())
    }

    pub(super) async fn namespaces(&self) -> Result<Vec<iceberg::NamespaceIdent>, Status> {
        self.engine
            .catalog()
            .list_namespaces(None)
            .await
            .map_err(|e| status_from_catalog(FloeError::from_iceberg("listing namespaces", e)))
    }

    /// `GetTables`: the catalog, schema and table patterns are applied before any table's
    /// metadata is loaded; schemas load 8 at a time.
    pub(super) async fn list_tables(
        &self,
        query: CommandGetTables,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        // The patterns are applied here, before any table's metadata is loaded: a driver
        // asking for one table's schema must not make the coordinator load every table.
        let include_schema = query.include_schema;
        let wanted_catalog = query.catalog.as_deref().is_none_or(|c| c == CATALOG_NAME);
        let wanted_type = query.table_types.is_empty()
            || query
                .table_types
                .iter()
                .any(|t| t.eq_ignore_ascii_case("TABLE"));
        let schema_pattern = query.db_schema_filter_pattern.clone();
        let table_pattern = query.table_name_filter_pattern.clone();
        let mut builder = query.into_builder();
        if !wanted_catalog || !wanted_type {
            return one_batch(builder.schema(), builder.build());
        }
        let catalog = Arc::clone(self.engine.catalog());
        let mut wanted = vec![];
        for ns in self.namespaces().await? {
            if !admits(schema_pattern.as_deref(), &ns.to_url_string()) {
                continue;
            }
            // A namespace or table the catalog cannot read is left out (with a warning): one
            // broken entry must not hide every other table from every client.
            match catalog.list_tables(&ns).await {
                Ok(tables) => {
                    // Metadata tables (`orders$files`) are listed only to a pattern that asks
                    // for them by their `$`: a driver looking one up by name finds it, and a
                    // plain listing stays one entry per table.
                    let metadata = table_pattern.as_deref().filter(|p| p.contains('$'));
                    for t in tables {
                        if let Some(pattern) = metadata {
                            for kind in floe_catalog::metadata_tables::KINDS {
                                let name = format!("{}${kind}", t.name);
                                if admits(Some(pattern), &name) {
                                    wanted.push(TableIdent::new(t.namespace.clone(), name));
                                }
                            }
                        }
                        if admits(table_pattern.as_deref(), &t.name) {
                            wanted.push(t);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(namespace = %ns.to_url_string(), "GetTables: cannot list: {e}");
                }
            }
        }
        let schemas: Vec<Option<SchemaRef>> = futures::stream::iter(wanted.clone())
            .map(|ident| {
                let catalog = Arc::clone(&catalog);
                async move {
                    if !include_schema {
                        return Some(Arc::new(Schema::empty()));
                    }
                    match table_schema(&catalog, &ident).await {
                        Ok(schema) => Some(schema),
                        Err(e) => {
                            tracing::warn!(table = %ident, "GetTables: cannot load: {}", e.message());
                            None
                        }
                    }
                }
            })
            .buffered(8)
            .collect()
            .await;
        for (ident, schema) in wanted.iter().zip(schemas) {
            let Some(schema) = schema else { continue };
            builder
                .append(
                    CATALOG_NAME,
                    ident.namespace.to_url_string(),
                    &ident.name,
                    "TABLE",
                    &schema,
                )
                .map_err(ProtocolError::encoding("the table listing"))?;
        }
        one_batch(builder.schema(), builder.build())
    }
}

async fn table_schema(
    catalog: &Arc<dyn iceberg::Catalog>,
    ident: &TableIdent,
) -> Result<SchemaRef, Status> {
    use datafusion::catalog::TableProvider;
    let (base, kind) = floe_catalog::metadata_tables::split(ident.name());
    let base_ident = TableIdent::new(ident.namespace().clone(), base.to_string());
    let table = catalog.load_table(&base_ident).await.map_err(|e| {
        status_from_catalog(FloeError::from_iceberg(
            &format!("loading table {base_ident}"),
            e,
        ))
    })?;
    if let Some(kind) = kind {
        let provider =
            floe_catalog::metadata_tables::metadata_table(&table, &ident.to_string(), kind)
                .await
                .map_err(status_from_datafusion)?;
        return Ok(provider.schema());
    }
    let provider = IcebergTableProvider::try_new(table, Arc::clone(catalog), None)
        .map_err(status_from_datafusion)?;
    // As a query's results come: strings plain.
    Ok(floe_engine::views::plain_schema(&provider.schema()))
}
