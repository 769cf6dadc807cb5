using Bursar.Core.Keys;
using Bursar.Core.Ledger;
using Bursar.Core.Pricing;
using Bursar.Core.Tokens;
using Bursar.Core.Budgets;
using Bursar.Core.Caching;
using Bursar.Core.Limits;
using Bursar.Core.Runs;
using Bursar.Gateway.Admission;
using Bursar.Gateway.Auth;
using Bursar.Gateway.Dashboard;
using Bursar.Gateway.Endpoints;
using Bursar.Gateway.Metering;
using Bursar.Gateway.Proxy;
using Bursar.Providers.Simulator;
using Bursar.Providers.Upstream;
using Bursar.Storage.Sqlite;
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
        var builder = WebApplication.CreateSlimBuilder(args);
        builder.Logging.AddFilter("Microsoft.AspNetCore", LogLevel.Warning);
        builder.Logging.AddFilter("System.Net.Http.HttpClient", LogLevel.Warning);
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Limits.MaxRequestBodySize = null; // the gateway enforces its own limit with a provider-shaped 413
            k.AddServerHeader = false;
        });
        configure?.Invoke(builder);
        AddBursarGateway(builder.Services, builder.Configuration);
        var app = builder.Build();
        app.MapBursarGateway();
        return app;
    }

    /// <summary>The journal lives in the data directory unless <c>Bursar:Ledger:SpoolDirectory</c> says otherwise.</summary>
    private static LedgerWriterOptions WithSpool(LedgerWriterOptions o, BursarOptions bursar)
    {
        var copy = o.Clone();
        if (copy.SpoolDirectory == new LedgerWriterOptions().SpoolDirectory) copy.SpoolDirectory = bursar.SpoolDirectory;
        return copy;
    }

    public static IServiceCollection AddBursarGateway(this IServiceCollection services, IConfiguration configuration)
    {
        services.TryAddSingletonTimeProvider();
        services.AddOptions<BursarOptions>().Bind(configuration.GetSection(BursarOptions.Section))
            .Validate(o => { o.Validate(); return true; }).ValidateOnStart();
        services.AddOptions<ProvidersOptions>().Bind(configuration.GetSection(ProvidersOptions.Section))
            .Validate(o => { ProvidersOptions.WithDefaults(o); return true; }).ValidateOnStart();
        services.AddOptions<SimulatorOptions>().Bind(configuration.GetSection(SimulatorOptions.Section));
        services.AddOptions<Bursar.Core.Routing.RoutingOptions>().Bind(configuration.GetSection(Bursar.Core.Routing.RoutingOptions.Section))
            .Validate(o => { o.Validate(); return true; }).ValidateOnStart();
        services.AddSingleton(sp => sp.GetRequiredService<Bursar.Core.Routing.RoutingOptions>().RouterModel is { } file
            ? Bursar.Core.Routing.ComplexityRouter.Load(file) : Bursar.Core.Routing.ComplexityRouter.Default);
        // every route's target model must be served: checked once the deployments are known
        services.AddSingleton(sp =>
        {
            var o = sp.GetRequiredService<IOptions<Bursar.Core.Routing.RoutingOptions>>().Value;
            var registry = sp.GetRequiredService<UpstreamRegistry>();
            o.Validate(m => registry.Find(m) is not null);
            return o;
        });

        services.AddSingleton(sp => sp.GetRequiredService<IOptions<BursarOptions>>().Value);
        services.AddSingleton(sp => ProvidersOptions.WithDefaults(sp.GetRequiredService<IOptions<ProvidersOptions>>().Value));
        services.AddSingleton(sp => sp.GetRequiredService<IOptions<SimulatorOptions>>().Value);
        services.AddSingleton(sp =>
        {
            var log = sp.GetRequiredService<ILoggerFactory>().CreateLogger<SqliteStore>();
            return new SqliteStore(sp.GetRequiredService<BursarOptions>().ResolvedDatabasePath, m => LogStoreProgress(log, m), sp.GetRequiredService<TimeProvider>());
        });
        services.AddSingleton<IKeyStore>(sp => sp.GetRequiredService<SqliteStore>());
        services.AddSingleton<ILedgerStore>(sp => sp.GetRequiredService<SqliteStore>());
        services.AddSingleton<Bursar.Core.Reporting.IReportStore>(sp => sp.GetRequiredService<SqliteStore>());
        services.AddSingleton(sp => LoadCatalog(sp.GetRequiredService<SqliteStore>(), sp.GetRequiredService<BursarOptions>()));
        services.AddSingleton(sp => new TokenCounter(sp.GetRequiredService<BursarOptions>().ClaudeTokenFactor));
        services.AddSingleton(sp => new PromptTokenEstimator(sp.GetRequiredService<TokenCounter>()));
        services.AddOptions<LedgerWriterOptions>().Bind(configuration.GetSection(LedgerWriterOptions.Section))
            .Validate(o => { o.Validate(); return true; }).ValidateOnStart();
        services.AddSingleton(sp => new LedgerWriter(
            sp.GetRequiredService<ILedgerStore>(),
            WithSpool(sp.GetRequiredService<IOptions<LedgerWriterOptions>>().Value, sp.GetRequiredService<BursarOptions>()),
            sp.GetRequiredService<ILogger<LedgerWriter>>(),
            sp.GetRequiredService<TimeProvider>()));
        services.AddHostedService<LedgerService>();
        services.AddHostedService<LargeBodyMemoryTrim>();
        services.AddSingleton(sp => new ProviderSimulator(sp.GetRequiredService<SimulatorOptions>(), sp.GetRequiredService<TimeProvider>(), sp.GetRequiredService<PriceCatalog>(), sp.GetRequiredService<TokenCounter>()));
        services.AddSingleton(sp => new UpstreamRegistry(sp.GetRequiredService<ProvidersOptions>(), sp.GetRequiredService<ProviderSimulator>()));
        services.AddSingleton<UpstreamClient>();
        services.AddSingleton<KeyAuthenticator>();
        services.AddSingleton<AdminAuth>();
        services.AddSingleton(sp => new CallMeter(() => sp.GetRequiredService<PriceCatalog>(), sp.GetRequiredService<LedgerWriter>(), sp.GetRequiredService<TimeProvider>(), sp.GetRequiredService<ILogger<CallMeter>>(), sp.GetRequiredService<System.Diagnostics.Metrics.IMeterFactory>()));
        services.AddSingleton<IBudgetStore>(sp => sp.GetRequiredService<SqliteStore>());
        services.AddSingleton<IRateLimitStore>(sp => sp.GetRequiredService<SqliteStore>());
        services.AddOptions<BudgetAlertOptions>().Bind(configuration.GetSection("Bursar:Alerts"))
            .Validate(o => o.WebhookUrl is null || Uri.TryCreate(o.WebhookUrl, UriKind.Absolute, out _), "Bursar:Alerts:WebhookUrl must be an absolute URL.").ValidateOnStart();
        services.AddOptions<RunCapOptions>().Bind(configuration.GetSection(RunCapOptions.Section))
            .Validate(o => { o.Validate(); return true; }).ValidateOnStart();
        services.AddSingleton(sp => sp.GetRequiredService<IOptions<RunCapOptions>>().Value);
        services.AddSingleton(sp => new WebhookAlertSink(sp.GetRequiredService<IOptions<BudgetAlertOptions>>().Value,
            new HttpMessageInvoker(new SocketsHttpHandler { PooledConnectionLifetime = TimeSpan.FromMinutes(5) }), sp.GetRequiredService<TimeProvider>(), sp.GetRequiredService<ILogger<WebhookAlertSink>>()));
        services.AddSingleton<IBudgetAlertSink>(sp => sp.GetRequiredService<WebhookAlertSink>());
        services.AddSingleton<BudgetManager>();
        services.AddSingleton(sp => new RateLimiter(sp.GetRequiredService<TimeProvider>()));
        services.AddSingleton<RunTracker>();
        services.AddSingleton<AdmissionControl>();
        services.AddHostedService<PolicyLoader>();
        services.AddOptions<ResponseCacheOptions>().Bind(configuration.GetSection(ResponseCacheOptions.Section))
            .Validate(o => { o.Validate(); return true; }).ValidateOnStart();
        services.AddSingleton(sp => sp.GetRequiredService<IOptions<ResponseCacheOptions>>().Value);
        services.AddSingleton<IResponseCacheStore>(sp =>
        {
            var o = sp.GetRequiredService<ResponseCacheOptions>();
            if (string.IsNullOrEmpty(o.Redis)) return new MemoryResponseCacheStore(o, sp.GetRequiredService<TimeProvider>());
            // AbortOnConnectFail=false: the gateway starts (and serves, uncached) while Redis is unreachable, and reconnects on its own
            var config = StackExchange.Redis.ConfigurationOptions.Parse(o.Redis);
            config.AbortOnConnectFail = false;
            return new Bursar.Caching.Redis.RedisResponseCacheStore(StackExchange.Redis.ConnectionMultiplexer.Connect(config), o,
                sp.GetRequiredService<ILogger<Bursar.Caching.Redis.RedisResponseCacheStore>>());
        });
        services.AddSingleton<CacheFillCoordinator>();
        services.AddOptions<Bursar.Core.Caching.Semantic.SemanticCacheOptions>().Bind(configuration.GetSection(Bursar.Core.Caching.Semantic.SemanticCacheOptions.Section))
            .Validate(o => { o.Validate(); return true; }).ValidateOnStart();
        services.AddSingleton(sp => sp.GetRequiredService<IOptions<Bursar.Core.Caching.Semantic.SemanticCacheOptions>>().Value);
        services.AddSingleton<Microsoft.Extensions.AI.IEmbeddingGenerator<string, Microsoft.Extensions.AI.Embedding<float>>>(sp =>
        {
            var o = sp.GetRequiredService<Bursar.Core.Caching.Semantic.SemanticCacheOptions>();
            if (o.Generator == "local") return new Bursar.Core.Caching.Semantic.HashedNGramEmbeddingGenerator();
            if (o.Generator == "onnx") return new Bursar.Embeddings.Onnx.OnnxEmbeddingGenerator(o.OnnxModelPath!, o.OnnxVocabPath!);
            // an OpenAI-compatible endpoint; with no key, the built-in Simulator serves embeddings (offline first)
            var simulated = string.IsNullOrEmpty(o.EmbeddingsApiKey);
            HttpMessageInvoker http = simulated
                ? new HttpMessageInvoker(new SimulatorHttpHandler(sp.GetRequiredService<ProviderSimulator>()))
                : new HttpMessageInvoker(new SocketsHttpHandler { PooledConnectionLifetime = TimeSpan.FromMinutes(5) });
            var baseUrl = new Uri(o.EmbeddingsBaseUrl ?? "https://api.openai.com/v1");
            return new Bursar.Core.Caching.Semantic.OpenAIEmbeddingGenerator(http, baseUrl, simulated ? "simulator" : o.EmbeddingsApiKey, o.EmbeddingsModel);
        });
        services.AddSingleton<Bursar.Core.Caching.Semantic.SemanticResponseCache>();
        services.AddOptions<PromptCacheOptions>().Bind(configuration.GetSection(PromptCacheOptions.Section));
        services.AddSingleton(sp => sp.GetRequiredService<IOptions<PromptCacheOptions>>().Value);
        services.AddSingleton<VolatilePrefixDetector>();
        services.AddSingleton<PrefixFingerprint>();
        services.AddSingleton(sp => new PromptCachePlacer(sp.GetRequiredService<TokenCounter>(), sp.GetRequiredService<TimeProvider>()));
        services.AddSingleton<Bursar.Gateway.Routing.DeploymentHealth>();
        services.AddSingleton(sp => new Bursar.Core.Routing.RouteTable(sp.GetRequiredService<Bursar.Core.Routing.RoutingOptions>().WithDefaults()));
        services.AddSingleton<Bursar.Core.Routing.IRouteStore>(sp => sp.GetRequiredService<SqliteStore>());
        services.AddSingleton<Bursar.Gateway.Routing.RouteLoader>();
        services.AddSingleton<Bursar.Gateway.Routing.LlmClassifier>();
        services.AddSingleton(sp => new Bursar.Core.Routing.OutputCapLearner(() => sp.GetRequiredService<Bursar.Core.Routing.RouteTable>().Current, sp.GetRequiredService<TimeProvider>()));
        services.AddSingleton<Bursar.Gateway.Routing.OutputCapService>();
        services.AddHostedService(sp => sp.GetRequiredService<Bursar.Gateway.Routing.OutputCapService>());
        services.AddSingleton<ProxyPipeline>();
        services.AddMetrics();
        // OpenTelemetry: Prometheus text at /metrics always; OTLP export when OTEL_EXPORTER_OTLP_ENDPOINT is set
        var otel = services.AddOpenTelemetry()
            .WithMetrics(m => m.AddMeter(CallMeter.MeterName).AddPrometheusExporter())
            .WithTracing(t => t.AddSource(CallMeter.MeterName));
        if (!string.IsNullOrEmpty(configuration["OTEL_EXPORTER_OTLP_ENDPOINT"])) otel.UseOtlpExporter();
        services.AddProblemDetails();
        services.AddBursarOpenApi(); // the admin API's document at /openapi/v1.json
        // binding failures throw, so the admin APIs answer them with problem details naming the field (AdminBadRequest)
        services.Configure<Microsoft.AspNetCore.Routing.RouteHandlerOptions>(o => o.ThrowOnBadRequest = true);
        services.ConfigureHttpJsonOptions(o =>
        {
            o.SerializerOptions.PropertyNamingPolicy = System.Text.Json.JsonNamingPolicy.SnakeCaseLower;
            o.SerializerOptions.Converters.Add(new System.Text.Json.Serialization.JsonStringEnumConverter(System.Text.Json.JsonNamingPolicy.SnakeCaseLower));
        });
        services.AddHealthChecks()
            .AddCheck("live", () => HealthCheckResult.Healthy(), tags: ["live"])
            .AddCheck<StoreHealthCheck>("store", tags: ["ready"]);
        return services;
    }

    private static void TryAddSingletonTimeProvider(this IServiceCollection services)
    {
        if (!services.Any(d => d.ServiceType == typeof(TimeProvider))) services.AddSingleton(TimeProvider.System);
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "{Progress}")]
    private static partial void LogStoreProgress(ILogger logger, string progress);

    /// <summary>Built-in prices, then prices imported into the store, then configured overrides (last wins).</summary>
    public static PriceCatalog LoadCatalog(SqliteStore store, BursarOptions options) =>
        new(PriceFiles.LoadBuiltIn().Concat(store.LoadImportedPrices()).Concat(options.Prices.Select(p => p.ToPrice())));

    public static WebApplication MapBursarGateway(this WebApplication app)
    {
        app.UseAdminBadRequestProblems();
        app.MapChatCompletionsApi();
        app.MapMessagesApi();
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

/// <summary>Loads budgets, rate limits and stored routes from the store at start and every refresh interval (the admin API reloads them on change).</summary>
internal sealed partial class PolicyLoader(BudgetManager budgets, RateLimiter limiter, IRateLimitStore limits, Bursar.Gateway.Routing.RouteLoader routes, SqliteStore store, BursarOptions options, TimeProvider time, ILogger<PolicyLoader> logger) : IHostedService
{
    private DateTimeOffset _pruned = DateTimeOffset.MinValue;

    private readonly CancellationTokenSource _stop = new();
    private Task? _loop;

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        await LoadAsync(cancellationToken).ConfigureAwait(false);
        _loop = Task.Run(async () =>
        {
            while (!_stop.IsCancellationRequested)
            {
                try
                {
                    await Task.Delay(options.PolicyRefreshInterval, time, _stop.Token).ConfigureAwait(false);
                    await LoadAsync(_stop.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException) { break; }
                catch (Exception e) { LogReloadFailed(logger, e); }
            }
        });
    }

    private async Task LoadAsync(CancellationToken ct)
    {
        await budgets.ReloadAsync(ct).ConfigureAwait(false);
        var fresh = await limits.ListRateLimitsAsync(ct).ConfigureAwait(false);
        if (!fresh.SequenceEqual(limiter.Limits)) limiter.Load(fresh);
        await routes.ReloadAsync(ct).ConfigureAwait(false);
        // hourly report rollups past their retention, a few times a day
        if (time.GetUtcNow() - _pruned > TimeSpan.FromHours(6))
        {
            store.PruneHourlyRollups();
            _pruned = time.GetUtcNow();
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Reloading budgets, rate limits and routes failed; keeping the last ones")]
    private static partial void LogReloadFailed(ILogger logger, Exception e);

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        if (_loop is not null) await _loop.ConfigureAwait(false);
    }
}

/// <summary>Starts the ledger writer (replaying any spool) and drains it on shutdown so no record is lost.</summary>
internal sealed class LedgerService(LedgerWriter writer) : IHostedService
{
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        // replay first: budgets are seeded from the ledger right after this
        try { await writer.ReplaySpoolAsync(cancellationToken).ConfigureAwait(false); }
        catch (Exception e) when (e is not OperationCanceledException) { /* the writer loop retries the replay */ }
        writer.Start();
    }

    public async Task StopAsync(CancellationToken cancellationToken) => await writer.DisposeAsync().ConfigureAwait(false);
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
