//! Spans over OTLP (feature `otlp`), configured by the standard OpenTelemetry
//! variables: on when `OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set (or `OTEL_TRACES_EXPORTER=otlp`),
//! off with `OTEL_TRACES_EXPORTER=none`; `OTEL_EXPORTER_OTLP_PROTOCOL`
//! (`http/protobuf`, the default, or `grpc`), `OTEL_EXPORTER_OTLP_HEADERS`,
//! `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`,
//! `OTEL_SERVICE_NAME` (else the cluster's name) and
//! `OTEL_RESOURCE_ATTRIBUTES` as everywhere else.
//!
//! Spans are batched on the SDK's own thread; each export runs as a task on
//! the node's tokio runtime (the exporters' HTTP and gRPC clients need it),
//! and the node flushes what is left when it stops.

#[cfg(feature = "otlp")]
pub(crate) use enabled::*;

/// A telemetry variable that does not make sense, named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}={value:?}: {problem}")]
pub struct TelemetryError {
    pub variable: &'static str,
    pub value: String,
    pub problem: String,
}

/// What the variables ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Export {
    Off,
    Http,
    Grpc,
}

/// Reads the standard variables through `var` (empty counts as unset).
pub(crate) fn requested(var: impl Fn(&str) -> Option<String>) -> Result<Export, TelemetryError> {
    let var = |name: &str| var(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let exporter = var("OTEL_TRACES_EXPORTER");
    let wanted = match exporter.as_deref() {
        Some("none") => return Ok(Export::Off),
        Some("otlp") => true,
        Some(other) => {
            return Err(TelemetryError {
                variable: "OTEL_TRACES_EXPORTER",
                value: other.to_owned(),
                problem: "Arlen exports spans over OTLP only: use otlp or none".to_owned(),
            });
        }
        None => var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT")).is_some(),
    };
    if !wanted {
        return Ok(Export::Off);
    }
    let (variable, protocol) = match var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") {
        Some(protocol) => ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", Some(protocol)),
        None => ("OTEL_EXPORTER_OTLP_PROTOCOL", var("OTEL_EXPORTER_OTLP_PROTOCOL")),
    };
    match protocol.as_deref() {
        None | Some("http/protobuf") => Ok(Export::Http),
        Some("grpc") => Ok(Export::Grpc),
        Some(other) => Err(TelemetryError {
            variable,
            value: other.to_owned(),
            problem: "supported protocols are http/protobuf (the default) and grpc".to_owned(),
        }),
    }
}

#[cfg(feature = "otlp")]
mod enabled {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry::KeyValue;
    use opentelemetry_otlp::WithExportConfig as _;
    use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
    use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, SpanData, SpanExporter};
    use opentelemetry_sdk::Resource;

    use super::{requested, Export, TelemetryError};

    /// The exporting provider, once logging is set up; flushed when the node stops.
    #[derive(Debug, Clone, Default)]
    pub(crate) struct Telemetry {
        provider: Arc<Mutex<Option<SdkTracerProvider>>>,
    }

    impl Telemetry {
        /// A tracer exporting as the variables say, or `None` when they do
        /// not ask for export. Needs a tokio runtime (the current one runs
        /// the exports).
        pub(crate) fn start(&self, config: &arlen_config::Config) -> Result<Option<SdkTracer>, TelemetryError> {
            let export = requested(|name| std::env::var(name).ok())?;
            if export == Export::Off {
                return Ok(None);
            }
            let runtime = tokio::runtime::Handle::try_current().map_err(|_| TelemetryError {
                variable: "OTEL_EXPORTER_OTLP_ENDPOINT",
                value: std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").unwrap_or_default(),
                problem: "spans are exported from the tokio runtime: call init_logging inside it".to_owned(),
            })?;
            let endpoint_variable = if std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some() {
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
            } else {
                "OTEL_EXPORTER_OTLP_ENDPOINT"
            };
            let built = match export {
                Export::Http => opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .build(),
                Export::Grpc => opentelemetry_otlp::SpanExporter::builder().with_tonic().build(),
                Export::Off => unreachable!("returned above"),
            };
            let exporter = built.map_err(|error| TelemetryError {
                variable: endpoint_variable,
                value: std::env::var(endpoint_variable).unwrap_or_default(),
                problem: format!("cannot export spans there: {error}"),
            })?;
            let mut resource = Resource::builder().with_attributes([
                KeyValue::new("service.instance.id", config.cluster.node_id.clone()),
                KeyValue::new("arlen.cluster", config.cluster.name.clone()),
                KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            ]);
            if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
                resource = resource.with_service_name(config.cluster.name.clone());
            }
            let provider = SdkTracerProvider::builder()
                .with_resource(resource.build())
                .with_batch_exporter(OnRuntime { inner: Arc::new(exporter), runtime })
                .build();
            let tracer = provider.tracer("arlen");
            *self.provider.lock().unwrap_or_else(|p| p.into_inner()) = Some(provider);
            Ok(Some(tracer))
        }

        /// Exports what is left and stops the exporter (off the runtime's
        /// workers: the exports themselves run on them).
        pub(crate) async fn shutdown(&self) {
            let Some(provider) = self.provider.lock().unwrap_or_else(|p| p.into_inner()).take() else {
                return;
            };
            let stopped =
                tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(Duration::from_secs(5))).await;
            match stopped {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!(%error, "spans may be lost: the OTLP exporter did not flush"),
                Err(error) => tracing::warn!(%error, "spans may be lost: the OTLP exporter's shutdown failed"),
            }
        }
    }

    /// An exporter whose exports run as tasks on a tokio runtime: the SDK's
    /// batch thread has none, and hyper's and tonic's clients need one.
    #[derive(Debug)]
    struct OnRuntime {
        inner: Arc<opentelemetry_otlp::SpanExporter>,
        runtime: tokio::runtime::Handle,
    }

    impl SpanExporter for OnRuntime {
        fn export(&self, batch: Vec<SpanData>) -> impl std::future::Future<Output = OTelSdkResult> + Send {
            let inner = self.inner.clone();
            let task = self.runtime.spawn(async move { inner.export(batch).await });
            async move {
                task.await.unwrap_or_else(|error| Err(OTelSdkError::InternalFailure(format!("export task: {error}"))))
            }
        }

        fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
            self.inner.shutdown_with_timeout(timeout)
        }

        fn force_flush(&self) -> OTelSdkResult {
            self.inner.force_flush()
        }

        fn set_resource(&mut self, resource: &Resource) {
            if let Some(inner) = Arc::get_mut(&mut self.inner) {
                inner.set_resource(resource);
            }
        }
    }
}

#[cfg(not(feature = "otlp"))]
mod disabled {
    use super::{requested, Export};

    /// Without the `otlp` feature: nothing to export, nothing to flush.
    #[derive(Debug, Clone, Default)]
    pub(crate) struct Telemetry {}

    impl Telemetry {
        /// Says so when the variables ask for an export this build cannot do.
        pub(crate) fn warn_if_requested(&self) {
            if !matches!(requested(|name| std::env::var(name).ok()), Ok(Export::Off)) {
                tracing::warn!(
                    "OTEL_* variables ask for span export, but this build has no `otlp` feature: no spans are exported"
                );
            }
        }

        pub(crate) async fn shutdown(&self) {}
    }
}

#[cfg(not(feature = "otlp"))]
pub(crate) use disabled::Telemetry;

#[cfg(test)]
mod tests {
    use super::*;

    fn with(vars: &[(&str, &str)]) -> Result<Export, TelemetryError> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        requested(move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    #[test]
    fn the_standard_variables_decide() {
        assert_eq!(with(&[]), Ok(Export::Off));
        assert_eq!(with(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "  ")]), Ok(Export::Off));
        assert_eq!(with(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")]), Ok(Export::Http));
        assert_eq!(with(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/v1/traces")]), Ok(Export::Http));
        assert_eq!(with(&[("OTEL_TRACES_EXPORTER", "otlp")]), Ok(Export::Http));
        assert_eq!(
            with(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]),
            Ok(Export::Grpc)
        );
        assert_eq!(
            with(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")
            ]),
            Ok(Export::Http),
            "the signal's own variable wins"
        );
        assert_eq!(
            with(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"), ("OTEL_TRACES_EXPORTER", "none")]),
            Ok(Export::Off)
        );
    }

    #[test]
    fn what_cannot_be_honoured_is_named() {
        let error = with(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")])
            .unwrap_err();
        assert_eq!(error.variable, "OTEL_EXPORTER_OTLP_PROTOCOL");
        assert!(error.to_string().contains("http/json") && error.to_string().contains("grpc"), "{error}");
        let error = with(&[("OTEL_TRACES_EXPORTER", "zipkin")]).unwrap_err();
        assert_eq!(error.variable, "OTEL_TRACES_EXPORTER");
    }
}
