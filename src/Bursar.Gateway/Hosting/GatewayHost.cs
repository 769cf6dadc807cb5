using Bursar.Hosting;
using Bursar.Core.Keys;
using Bursar.Core.Ledger;
using Bursar.Core.Pricing;
using Bursar.Core.Tokens;
using Bursar.Core.Budgets;
using Bursar.Core.Caching;
using Bursar.Core.Limits;
using Bursar.Core.Runs;
using Bursar.Core.Admission;
using Bursar.Core.Attribution;
using Bursar.Core.Caching.Semantic;
using Bursar.Core.Metering;
using Bursar.Core.Pipeline;
using Bursar.Core.Routing;
using Bursar.Gateway.Auth;
using Bursar.Gateway.Dashboard;
using Bursar.Gateway.Endpoints;
using Bursar.Gateway.Proxy;
using Bursar.Providers.Simulator;
using Bursar.Providers.Upstream;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using OpenTelemetry;
using OpenTelemetry.Metrics;
using OpenTelemetry.Trace;

namespace Bursar.Gateway.Hosting;

/// <summary>Builds the Bursar gateway: used by <c>bursar serve</c>, <c>bursar demo</c>, the tests and the benchmarks.</summary>
public static partial class GatewayHost
{
    public static WebApplication Build(string[] args, Action<WebApplicationBuilder>? configure = null)
    {
        // appsettings files are read once: the host's default reload-on-change watches the content root and everything under
        // it, and the default data folder (.bursar) sits there, so every ledger write woke a file-watcher thread. A later
        // --hostBuilder:reloadConfigOnChange=true still turns it back on.
        var builder = WebApplication.CreateSlimBuilder(["--hostBuilder:reloadConfigOnChange=false", .. args]);
        builder.Logging.AddFilter("Microsoft.AspNetCore", LogLevel.Warning);
        // this category only logs request start and finish (Information), but while it is enabled at any level ASP.NET Core
        // starts an Activity for every request (and HttpClient a child one for the upstream call): per-request work for nothing
        builder.Logging.AddFilter("Microsoft.AspNetCore.Hosting.Diagnostics", LogLevel.None);
        builder.Logging.AddFilter("System.Net.Http.HttpClient", LogLevel.Warning);
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Limits.MaxRequestBodySize = null; // the gateway enforces its own limit with a provider-shaped 413
            k.AddServerHeader = false;
        });
        // Bursar:Server:InlineScheduling (default false): run each request on the socket's I/O thread instead of handing it
        // to the thread pool; one hop fewer per request. Safe here because nothing on the request path blocks (the ledger
        // is written on its own threads), measured in bench/RESULTS.md.
        var inline = builder.Configuration.GetValue("Bursar:Server:InlineScheduling", false);
        builder.WebHost.UseSockets(o => o.UnsafePreferInlineScheduling = inline);
        configure?.Invoke(builder);
        AddBursarGateway(builder.Services, builder.Configuration);
        var app = builder.Build();
        app.MapBursarGateway();
        return app;
    }

    public static IServiceCollection AddBursarGateway(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddBursarCore(configuration);
        services.AddOptions<ProvidersOptions>().Bind(configuration.GetSection(ProvidersOptions.Section))
            .Validate(o => { ProvidersOptions.WithDefaults(o); return true; }).ValidateOnStart();
        services.AddSingleton(sp => ProvidersOptions.WithDefaults(sp.GetRequiredService<IOptions<ProvidersOptions>>().Value));
        services.AddHostedService<LargeBodyMemoryTrim>();
        services.AddSingleton(sp => new UpstreamRegistry(sp.GetRequiredService<ProvidersOptions>(), sp.GetRequiredService<ProviderSimulator>()));
        // the warm-up's calls and their upstream, a Simulator of their own: nothing they do stays in the one callers' simulated deployments use
        services.AddSingleton(sp => new RehearsalGate(new ProviderSimulator(new SimulatorOptions(), sp.GetRequiredService<TimeProvider>(), sp.GetRequiredService<PriceCatalog>(), sp.GetRequiredService<TokenCounter>())));
        services.AddSingleton<UpstreamClient>();
        services.AddSingleton<KeyAuthenticator>();
        services.AddSingleton<AdminAuth>();
        services.AddSingleton<Bursar.Gateway.Routing.DeploymentHealth>();
        services.AddSingleton<Bursar.Gateway.Routing.LlmClassifier>();
        // the lever pipeline with the gateway's provider call as its last step
        services.AddSingleton<IServedModels, Bursar.Gateway.Routing.DeploymentModels>();
        services.AddSingleton<IDifficultyClassifier>(sp => sp.GetRequiredService<Bursar.Gateway.Routing.LlmClassifier>());
        services.AddSingleton<Bursar.Core.Context.IConversationSummarizer, Bursar.Gateway.Context.LlmSummarizer>();
        services.AddSingleton<UpstreamCall>();
        services.AddSingleton<ResponseChains>();
        services.AddSingleton<Bursar.Gateway.Endpoints.StoredResponses>();
        services.AddSingleton(sp => new LeverPipeline(sp.GetServices<ILeverStage>(), sp.GetRequiredService<UpstreamCall>(), sp.GetRequiredService<CallMeter>(), sp.GetRequiredService<AdmissionControl>()));
        services.AddSingleton<ProxyPipeline>();
        // provider batches passed through and metered line by line; the poller collects results after a restart too
        services.AddOptions<Bursar.Core.Batch.BatchOptions>().Bind(configuration.GetSection(Bursar.Core.Batch.BatchOptions.Section))
            .Validate(o => { o.Validate(); return true; }).ValidateOnStart();
        services.AddSingleton(sp => sp.GetRequiredService<IOptions<Bursar.Core.Batch.BatchOptions>>().Value);
        // both stores keep batches and jobs (SQLite: the ledger's file; PostgreSQL: migration 2's tables)
        services.AddSingleton<Bursar.Core.Batch.IBatchStore>(sp => (Bursar.Core.Batch.IBatchStore)sp.GetRequiredService<Bursar.Core.Storage.IBursarStore>());
        services.AddSingleton<Bursar.Gateway.Batch.BatchInput>();
        services.AddSingleton<Bursar.Gateway.Batch.BatchReservations>();
        services.AddSingleton<Bursar.Gateway.Batch.BatchCollector>();
        services.AddSingleton<Bursar.Gateway.Batch.BatchGateway>();
        services.AddSingleton<Bursar.Gateway.Batch.BatchPoller>();
        services.AddHostedService(sp => sp.GetRequiredService<Bursar.Gateway.Batch.BatchPoller>());
        // the batch lever's stage: deferrable calls queued durably and flushed as provider batches
        services.AddOptions<Bursar.Core.Batch.DeferralOptions>().Bind(configuration.GetSection(Bursar.Core.Batch.DeferralOptions.Section))
            .Validate(o => { o.Validate(); return true; }).ValidateOnStart();
        services.AddSingleton(sp => sp.GetRequiredService<IOptions<Bursar.Core.Batch.DeferralOptions>>().Value);
        services.AddSingleton<Bursar.Core.Batch.IJobStore>(sp => (Bursar.Core.Batch.IJobStore)sp.GetRequiredService<Bursar.Core.Storage.IBursarStore>());
        services.AddSingleton<Bursar.Core.Batch.IJobQueue, Bursar.Gateway.Batch.JobQueue>();
        // the optional signed webhook per key announcing a job's end, durable in the data directory
        services.AddOptions<Bursar.Core.Batch.WebhookOptions>().Bind(configuration.GetSection(Bursar.Core.Batch.WebhookOptions.Section))
            .Validate(o => { o.Validate(); return true; }).ValidateOnStart();
        services.AddSingleton(sp => sp.GetRequiredService<IOptions<Bursar.Core.Batch.WebhookOptions>>().Value);
        services.AddSingleton<Bursar.Gateway.Batch.JobWebhooks>();
        services.AddHostedService(sp => sp.GetRequiredService<Bursar.Gateway.Batch.JobWebhooks>());
        services.AddSingleton<Bursar.Gateway.Batch.JobLines>();
        services.AddSingleton<Bursar.Gateway.Batch.JobAnswers>();
        services.AddSingleton<Bursar.Gateway.Batch.JobFlusher>();
        services.AddHostedService(sp => sp.GetRequiredService<Bursar.Gateway.Batch.JobFlusher>());
        new LeverPipelineBuilder(services).Use<Bursar.Core.Batch.DeferralStage>();
        services.AddMetrics();
        // OpenTelemetry: Prometheus text at /metrics always; OTLP export when OTEL_EXPORTER_OTLP_ENDPOINT is set
        // spans only when they go somewhere: a listener with no exporter made every call build a span of 13 tags for nothing
        var otel = services.AddOpenTelemetry()
            .WithMetrics(m => m.AddMeter(CallMeter.MeterName).AddPrometheusExporter());
        if (!string.IsNullOrEmpty(configuration["OTEL_EXPORTER_OTLP_ENDPOINT"])) otel.WithTracing(t => t.AddSource(CallMeter.MeterName)).UseOtlpExporter();
        services.AddProblemDetails();
        services.AddBursarOpenApi(); // the admin API's document at /openapi/v1.json
        // binding failures throw, so the admin APIs answer them with problem details naming the field (AdminBadRequest)
        services.Configure<Microsoft.AspNetCore.Routing.RouteHandlerOptions>(o => o.ThrowOnBadRequest = true);
        services.ConfigureHttpJsonOptions(o =>
        {
            o.SerializerOptions.PropertyNamingPolicy = System.Text.Json.JsonNamingPolicy.SnakeCaseLower;
            o.SerializerOptions.Converters.Add(new System.Text.Json.Serialization.JsonStringEnumConverter(System.Text.Json.JsonNamingPolicy.SnakeCaseLower));
        });
        services.AddSingleton<GatewayWarmup>();
        services.AddHostedService(sp => sp.GetRequiredService<GatewayWarmup>());
        services.AddHealthChecks()
            .AddCheck("live", () => HealthCheckResult.Healthy(), tags: ["live"])
            .AddCheck<GatewayWarmup>("warm_up", tags: ["ready"])
            .AddCheck<StoreHealthCheck>("store", tags: ["ready"])
            .AddCheck<SharedCountersHealthCheck>("shared_counters", tags: ["ready"])
            .AddCheck<SemanticEncoderHealthCheck>("semantic_encoder", tags: ["ready"]);
        return services;
    }

    public static WebApplication MapBursarGateway(this WebApplication app)
    {
        app.UseAdminBadRequestProblems();
        app.MapWarmUpUpstream();
        app.MapChatCompletionsApi();
        app.MapResponsesApi();
        app.MapEmbeddingsApi();
        app.MapMessagesApi();
        app.MapBatchApi();
        app.MapModelsApi();
        app.MapHealthApi();
        app.MapAdminApi();
        app.MapReportsApi();
        app.MapRoutesApi();
        app.MapOpenApiDocumentApi();
        app.MapPrometheusScrapingEndpoint("/metrics");
        app.MapDashboard();
        return app;
    }
}

internal sealed class StoreHealthCheck(ILedgerStore store, LedgerWriter writer) : IHealthCheck
{
    public async Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        try
        {
            var n = await store.CountAsync(cancellationToken).ConfigureAwait(false);
            var data = new Dictionary<string, object> { ["ledger_records"] = n, ["ledger_pending"] = writer.Pending, ["ledger_store_failures"] = writer.StoreFailures };
            return HealthCheckResult.Healthy("ledger store reachable", data);
        }
        catch (Exception e)
        {
            return HealthCheckResult.Unhealthy("ledger store unreachable; records are spooled to disk", e);
        }
    }
}

/// <summary>The shared counters (<c>Bursar:Redis:Configuration</c>: budgets, rate limits, run state): reachable, and what they do while they are not.</summary>
internal sealed class SharedCountersHealthCheck(Bursar.Hosting.SharedRedis redis, Bursar.Core.Budgets.BudgetOptions options, Bursar.Core.Budgets.BudgetManager budgets) : IHealthCheck
{
    public async Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        if (redis.Connection is not { } c) return HealthCheckResult.Healthy("budgets, rate limits and runs are counted in this process (no Bursar:Redis:Configuration)");
        var data = new Dictionary<string, object> { ["store"] = budgets.SharedCounters ?? "", ["when_down"] = options.WhenSharedCountersDown.ToString(), ["failures"] = budgets.SharedFailures };
        try
        {
            var rtt = await c.GetDatabase().PingAsync().WaitAsync(TimeSpan.FromSeconds(2), cancellationToken).ConfigureAwait(false);
            data["ping_ms"] = rtt.TotalMilliseconds;
            return HealthCheckResult.Healthy("shared counters (budgets, rate limits, run state) reachable", data);
        }
        catch (Exception e) when (e is StackExchange.Redis.RedisException or TimeoutException)
        {
            var policy = options.WhenSharedCountersDown == Bursar.Core.Budgets.SharedCountersDownPolicy.FailClosed
                ? "budgeted, rate-limited and run calls are refused with 503 until it is back" : "budgets, rate limits and runs are counted in each instance until it is back";
            return HealthCheckResult.Unhealthy($"shared counters ({budgets.SharedCounters}) unreachable: {policy}", e, data);
        }
    }
}

