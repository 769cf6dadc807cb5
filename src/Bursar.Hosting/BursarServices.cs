using Bursar.Core.Admission;
using Bursar.Core.Attribution;
using Bursar.Core.Budgets;
using Bursar.Core.Caching;
using Bursar.Core.Caching.Semantic;
using Bursar.Core.Context;
using Bursar.Core.Keys;
using Bursar.Core.Ledger;
using Bursar.Core.Limits;
using Bursar.Core.Metering;
using Bursar.Core.Pipeline;
using Bursar.Core.Pricing;
using Bursar.Core.Routing;
using Bursar.Core.Runs;
using Bursar.Core.Storage;
using Bursar.Core.Tokens;
using Bursar.Providers.Simulator;
using Bursar.Storage.Sqlite;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Bursar.Hosting;

/// <summary>
/// The core's services on their embedded defaults (one SQLite file in <c>Bursar:DataDirectory</c>, in-process caches,
/// the Simulator for embeddings when no key is set), and the lever stages, for every face: the gateway adds its HTTP
/// face and provider call, the .NET library its chat-client face.
/// </summary>
public static partial class BursarServices
{
    /// <summary>Registers the stores, the ledger, prices, budgets, limits, runs, caches, routing and the lever stages, bound to <paramref name="configuration"/>.</summary>
    public static IServiceCollection AddBursarCore(this IServiceCollection services, IConfiguration configuration)
    {
        services.TryAddSingletonTimeProvider();
        services.AddOptions<BursarOptions>().Bind(configuration.GetSection(BursarOptions.Section))
            .Validate(o => { o.Validate(); return true; }).ValidateOnStart();
        services.AddOptions<SimulatorOptions>().Bind(configuration.GetSection(SimulatorOptions.Section));
        services.AddOptions<Bursar.Core.Routing.RoutingOptions>().Bind(configuration.GetSection(Bursar.Core.Routing.RoutingOptions.Section))
            .Validate(o => { o.Validate(); return true; }).ValidateOnStart();
        services.AddSingleton(sp => sp.GetRequiredService<Bursar.Core.Routing.RoutingOptions>().RouterModel is { } file
            ? Bursar.Core.Routing.ComplexityRouter.Load(file) : Bursar.Core.Routing.ComplexityRouter.Default);
        // every route's target model must be served: checked once the face says what it serves
        services.AddSingleton(sp =>
        {
            var o = sp.GetRequiredService<IOptions<Bursar.Core.Routing.RoutingOptions>>().Value;
            o.Validate(sp.GetRequiredService<IServedModels>().Serves);
            return o;
        });
        services.TryAddSingleton(IServedModels.Any);
        services.TryAddSingleton(IDifficultyClassifier.None);

        services.AddSingleton(sp => sp.GetRequiredService<IOptions<BursarOptions>>().Value);
        services.AddSingleton(sp => sp.GetRequiredService<IOptions<SimulatorOptions>>().Value);
        // the store Bursar:Store names; its interfaces all resolve to the one instance
        services.AddSingleton<IBursarStore>(sp =>
        {
            var log = sp.GetRequiredService<ILoggerFactory>().CreateLogger<IBursarStore>();
            return OpenStore(sp.GetRequiredService<BursarOptions>(), sp.GetRequiredService<TimeProvider>(), m => LogStoreProgress(log, m));
        });
        services.AddSingleton(sp => sp.GetRequiredService<IBursarStore>() as SqliteStore
            ?? throw new InvalidOperationException("Bursar:Store is postgres: ask for IBursarStore (or one of the store interfaces), not SqliteStore."));
        services.AddSingleton<IKeyStore>(sp => sp.GetRequiredService<IBursarStore>());
        services.AddSingleton<ILedgerStore>(sp => sp.GetRequiredService<IBursarStore>());
        services.AddSingleton<Bursar.Core.Reporting.IReportStore>(sp => sp.GetRequiredService<IBursarStore>());
        services.AddSingleton<IPriceStore>(sp => sp.GetRequiredService<IBursarStore>());
        services.AddSingleton(sp => LoadCatalog(sp.GetRequiredService<IPriceStore>(), sp.GetRequiredService<BursarOptions>()));
        services.AddSingleton(sp => new TokenCounter(sp.GetRequiredService<BursarOptions>().ClaudeTokenFactor));
        services.AddSingleton(sp => new PromptTokenEstimator(sp.GetRequiredService<TokenCounter>()));
        services.AddOptions<LedgerWriterOptions>().Bind(configuration.GetSection(LedgerWriterOptions.Section))
            .Validate(o => { o.Validate(); return true; }).ValidateOnStart();
        services.AddSingleton(sp => new LedgerWriter(
            sp.GetRequiredService<ILedgerStore>(),
            WithSpool(sp.GetRequiredService<IOptions<LedgerWriterOptions>>().Value, sp.GetRequiredService<BursarOptions>()),
            sp.GetRequiredService<ILogger<LedgerWriter>>(),
            sp.GetRequiredService<TimeProvider>()));
        services.AddSingleton<LedgerService>();
        services.AddHostedService(sp => sp.GetRequiredService<LedgerService>());
        services.AddSingleton(sp => new ProviderSimulator(sp.GetRequiredService<SimulatorOptions>(), sp.GetRequiredService<TimeProvider>(), sp.GetRequiredService<PriceCatalog>(), sp.GetRequiredService<TokenCounter>()));
        services.AddSingleton(sp =>
        {
            PriceCatalog? catalog = null; // resolved once, on first use (not per call)
            return new CallMeter(() => catalog ??= sp.GetRequiredService<PriceCatalog>(), sp.GetRequiredService<LedgerWriter>(), sp.GetRequiredService<TimeProvider>(), sp.GetRequiredService<ILogger<CallMeter>>(), sp.GetRequiredService<System.Diagnostics.Metrics.IMeterFactory>());
        });
        services.AddSingleton<IBudgetStore>(sp => sp.GetRequiredService<IBursarStore>());
        services.AddSingleton<IRateLimitStore>(sp => sp.GetRequiredService<IBursarStore>());
        services.AddOptions<BudgetAlertOptions>().Bind(configuration.GetSection("Bursar:Alerts"))
            .Validate(o => o.WebhookUrl is null || Uri.TryCreate(o.WebhookUrl, UriKind.Absolute, out _), "Bursar:Alerts:WebhookUrl must be an absolute URL.").ValidateOnStart();
        services.AddOptions<RunCapOptions>().Bind(configuration.GetSection(RunCapOptions.Section))
            .Validate(o => { o.Validate(); return true; }).ValidateOnStart();
        services.AddSingleton(sp => sp.GetRequiredService<IOptions<RunCapOptions>>().Value);
        services.AddSingleton(sp => new WebhookAlertSink(sp.GetRequiredService<IOptions<BudgetAlertOptions>>().Value,
            new HttpMessageInvoker(new SocketsHttpHandler { PooledConnectionLifetime = TimeSpan.FromMinutes(5) }), sp.GetRequiredService<TimeProvider>(), sp.GetRequiredService<ILogger<WebhookAlertSink>>()));
        services.AddSingleton<IBudgetAlertSink>(sp => sp.GetRequiredService<WebhookAlertSink>());
        services.AddOptions<BudgetOptions>().Bind(configuration.GetSection(BudgetOptions.Section))
            .Validate(o => { o.Validate(); return true; }).ValidateOnStart();
        services.AddSingleton(sp => sp.GetRequiredService<IOptions<BudgetOptions>>().Value);
        // budgets counted together by every instance when Bursar:Redis:Configuration is set; else in this process
        services.AddSingleton<SharedRedis>();
        services.AddSingleton(sp => new BudgetManager(sp.GetRequiredService<IBudgetStore>(), sp.GetRequiredService<IBudgetAlertSink>(), sp.GetRequiredService<TimeProvider>(),
            sp.GetRequiredService<ILogger<BudgetManager>>(), sp.GetRequiredService<SharedRedis>().BudgetCounters, sp.GetRequiredService<BudgetOptions>()));
        // rate-limit cells and run state shared the same way (and under the same policy while Redis is unreachable)
        services.AddSingleton(sp => new RateLimiter(sp.GetRequiredService<TimeProvider>(), sp.GetRequiredService<SharedRedis>().RateLimitCells,
            sp.GetRequiredService<BudgetOptions>().WhenSharedCountersDown, sp.GetRequiredService<ILogger<RateLimiter>>()));
        services.AddSingleton(sp => new RunTracker(sp.GetRequiredService<RunCapOptions>(), sp.GetRequiredService<TimeProvider>(),
            sp.GetRequiredService<SharedRedis>().RunState(sp.GetRequiredService<RunCapOptions>()),
            sp.GetRequiredService<BudgetOptions>().WhenSharedCountersDown, sp.GetRequiredService<ILogger<RunTracker>>()));
        services.AddSingleton<AdmissionControl>();
        services.AddSingleton<PolicyLoader>();
        services.AddHostedService(sp => sp.GetRequiredService<PolicyLoader>());
        services.AddOptions<ResponseCacheOptions>().Bind(configuration.GetSection(ResponseCacheOptions.Section))
            .Validate(o => { o.Validate(); return true; }).ValidateOnStart();
        services.AddSingleton(sp => sp.GetRequiredService<IOptions<ResponseCacheOptions>>().Value);
        services.AddSingleton<ResponseCacheRedis>();
        services.AddSingleton<IResponseCacheStore>(sp =>
        {
            var o = sp.GetRequiredService<ResponseCacheOptions>();
            if (sp.GetRequiredService<ResponseCacheRedis>().Connection is not { } c) return new MemoryResponseCacheStore(o, sp.GetRequiredService<TimeProvider>());
            return new Bursar.Caching.Redis.RedisResponseCacheStore(c, o, sp.GetRequiredService<ILogger<Bursar.Caching.Redis.RedisResponseCacheStore>>());
        });
        // stampede protection across instances when the cache is shared; in one process the coordinator is enough
        services.AddSingleton<IResponseCacheFillLock>(sp => sp.GetRequiredService<ResponseCacheRedis>().Connection is { } c
            ? new Bursar.Caching.Redis.RedisResponseCacheFillLock(c, sp.GetRequiredService<ResponseCacheOptions>(), sp.GetRequiredService<ILogger<Bursar.Caching.Redis.RedisResponseCacheFillLock>>())
            : IResponseCacheFillLock.None);
        services.AddSingleton<CacheFillCoordinator>();
        services.AddOptions<Bursar.Core.Caching.Semantic.SemanticCacheOptions>().Bind(configuration.GetSection(Bursar.Core.Caching.Semantic.SemanticCacheOptions.Section))
            .Validate(o => { o.Validate(); return true; }).ValidateOnStart();
        services.AddSingleton(sp => sp.GetRequiredService<IOptions<Bursar.Core.Caching.Semantic.SemanticCacheOptions>>().Value);
        // the encoder is chosen (and MiniLM extracted and loaded) on first use, or at start when a feature opts in
        services.AddSingleton(sp => new SemanticResponseCache(sp.GetRequiredService<SemanticCacheOptions>(), () => SemanticEncoders.Choose(sp), sp.GetRequiredService<TimeProvider>()));
        services.AddHostedService<SemanticEncoderWarmup>();
        // semantic entries shared through the response cache's Redis, each instance's index kept warm from it
        services.AddSingleton<ISharedSemanticEntries>(sp => sp.GetRequiredService<ResponseCacheRedis>().Connection is { } c
            ? new Bursar.Caching.Redis.RedisSemanticEntries(c, sp.GetRequiredService<ResponseCacheOptions>(), sp.GetRequiredService<ILogger<Bursar.Caching.Redis.RedisSemanticEntries>>())
            : NoSharedSemanticEntries.Instance);
        services.AddHostedService<SemanticCacheSync>();
        services.AddOptions<Bursar.Embeddings.Onnx.HnswIndexOptions>().Bind(configuration.GetSection(Bursar.Core.Caching.Semantic.SemanticCacheOptions.Section + ":Ann"))
            .Validate(o => { o.Validate(); return true; }).ValidateOnStart();
        services.AddSingleton(sp => sp.GetRequiredService<IOptions<Bursar.Embeddings.Onnx.HnswIndexOptions>>().Value);
        services.AddOptions<PromptCacheOptions>().Bind(configuration.GetSection(PromptCacheOptions.Section));
        services.AddSingleton(sp => sp.GetRequiredService<IOptions<PromptCacheOptions>>().Value);
        services.AddSingleton<VolatilePrefixDetector>();
        services.AddSingleton<PrefixFingerprint>();
        services.AddSingleton(sp => new PromptCachePlacer(sp.GetRequiredService<TokenCounter>(), sp.GetRequiredService<TimeProvider>()));
        services.AddSingleton(sp => new Bursar.Core.Routing.RouteTable(sp.GetRequiredService<Bursar.Core.Routing.RoutingOptions>().WithDefaults()));
        services.AddSingleton<Bursar.Core.Routing.IRouteStore>(sp => sp.GetRequiredService<IBursarStore>());
        services.AddSingleton<RouteLoader>();
        services.AddSingleton(sp => new Bursar.Core.Routing.OutputCapLearner(() => sp.GetRequiredService<Bursar.Core.Routing.RouteTable>().Current, sp.GetRequiredService<TimeProvider>()));
        services.AddSingleton<OutputCapService>();
        services.AddHostedService(sp => sp.GetRequiredService<OutputCapService>());
        services.AddOptions<Bursar.Core.Context.DocumentCompressionOptions>().Bind(configuration.GetSection(Bursar.Core.Context.DocumentCompressionOptions.Section))
            .Validate(o => { o.Validate(); return true; }).ValidateOnStart();
        services.AddSingleton(sp => new Bursar.Core.Context.DocumentCompressor(sp.GetRequiredService<IOptions<Bursar.Core.Context.DocumentCompressionOptions>>().Value));
        services.AddSingleton(sp => new Bursar.Core.Context.Compactor(sp.GetRequiredService<TokenCounter>()));
        services.AddSingleton(new Bursar.Core.Context.SummaryStore());
        // retrieval compaction embeds turns with the semantic cache's encoder (the same instance: one model loaded)
        services.AddSingleton(sp => new Bursar.Core.Context.TurnEmbeddings(() => sp.GetRequiredService<SemanticResponseCache>().Encoder.Generator));
        services.TryAddSingleton(Bursar.Core.Context.IConversationSummarizer.None);
        services.AddMetrics();
        // the levers, in LeverPipeline.Order (each face adds its provider call as the last step)
        new LeverPipelineBuilder(services)
            .UseAttribution().UseRunGuard().UseExactCache().UseSemanticCache().UseRouting().UseContext().UseOutputCaps().UsePromptCaching().UseAdmission();
        return services;
    }

    /// <summary>The journal lives in the data directory unless <c>Bursar:Ledger:SpoolDirectory</c> says otherwise.</summary>
    private static LedgerWriterOptions WithSpool(LedgerWriterOptions o, BursarOptions bursar)
    {
        var copy = o.Clone();
        if (copy.SpoolDirectory == new LedgerWriterOptions().SpoolDirectory) copy.SpoolDirectory = bursar.SpoolDirectory;
        return copy;
    }

    private static void TryAddSingletonTimeProvider(this IServiceCollection services)
    {
        if (!services.Any(d => d.ServiceType == typeof(TimeProvider))) services.AddSingleton(TimeProvider.System);
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "{Progress}")]
    private static partial void LogStoreProgress(ILogger logger, string progress);

    /// <summary>The store <c>Bursar:Store</c> names: the SQLite file in the data directory, or the PostgreSQL database (migrated on open).</summary>
    public static IBursarStore OpenStore(BursarOptions options, TimeProvider time, Action<string>? progress = null) =>
        options.UsesPostgres
            ? new Bursar.Storage.PostgreSql.PostgresStore(options.Postgres.ConnectionString!, time)
            : new SqliteStore(options.ResolvedDatabasePath, progress, time);

    /// <summary>Built-in prices, then prices imported into the store, then configured overrides (last wins).</summary>
    public static PriceCatalog LoadCatalog(IPriceStore store, BursarOptions options) =>
        new(PriceFiles.LoadBuiltIn().Concat(store.LoadImportedPrices()).Concat(options.Prices.Select(p => p.ToPrice())));

}

/// <summary>Loads budgets, rate limits and stored routes from the store at start and every refresh interval (the admin API reloads them on change).</summary>
public sealed partial class PolicyLoader(BudgetManager budgets, RateLimiter limiter, IRateLimitStore limits, RouteLoader routes, IBursarStore store, BursarOptions options, TimeProvider time, ILogger<PolicyLoader> logger) : IHostedService
{
    private DateTimeOffset _pruned = DateTimeOffset.MinValue;

    private readonly CancellationTokenSource _stop = new();
    private Task? _loop;

    private int _started;

    /// <summary>Loads the policies and starts the refresh loop; a second call (a host and the .NET library both starting it) does nothing.</summary>
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        if (Interlocked.Exchange(ref _started, 1) == 1) return;
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
public sealed class LedgerService(LedgerWriter writer) : IHostedService
{
    private int _started;

    /// <summary>Replays the journal and starts the writer; a second call does nothing.</summary>
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        if (Interlocked.Exchange(ref _started, 1) == 1) return;
        // replay first: budgets are seeded from the ledger right after this
        try { await writer.ReplaySpoolAsync(cancellationToken).ConfigureAwait(false); }
        catch (Exception e) when (e is not OperationCanceledException) { /* the writer loop retries the replay */ }
        writer.Start();
    }

    public async Task StopAsync(CancellationToken cancellationToken) => await writer.DisposeAsync().ConfigureAwait(false);
}

/// <summary>
/// The one Redis connection for shared counters (<c>Bursar:Redis:Configuration</c>: budgets, rate-limit cells, run state), opened on first use without
/// waiting for Redis (the gateway starts, and reconnects on its own, while Redis is unreachable).
/// </summary>
public sealed class SharedRedis(BursarOptions options, TimeProvider time) : IDisposable
{
    private readonly Lazy<StackExchange.Redis.ConnectionMultiplexer?> _connection = new(() =>
    {
        if (!options.Redis.Enabled) return null;
        var config = StackExchange.Redis.ConfigurationOptions.Parse(options.Redis.Configuration!);
        config.AbortOnConnectFail = false;
        // unless the configuration string says otherwise, a reservation waits at most 2 s for an unreachable Redis (then the policy applies)
        var given = options.Redis.Configuration!;
        if (!given.Contains("connectTimeout", StringComparison.OrdinalIgnoreCase)) config.ConnectTimeout = 2000;
        if (!given.Contains("syncTimeout", StringComparison.OrdinalIgnoreCase)) config.SyncTimeout = 2000;
        if (!given.Contains("asyncTimeout", StringComparison.OrdinalIgnoreCase)) config.AsyncTimeout = 2000;
        return StackExchange.Redis.ConnectionMultiplexer.Connect(config);
    });
    private Bursar.Caching.Redis.RedisBudgetCounters? _budgets;

    public StackExchange.Redis.ConnectionMultiplexer? Connection => _connection.Value;

    /// <summary>The shared budget counters, or null when no Redis is configured.</summary>
    public ISharedBudgetCounters? BudgetCounters => Connection is { } c ? _budgets ??= new Bursar.Caching.Redis.RedisBudgetCounters(c, time, holdTtl: options.Redis.HoldTtl) : null;

    /// <summary>The shared rate-limit cells, or null when no Redis is configured.</summary>
    public Bursar.Core.Limits.ISharedRateLimitCells? RateLimitCells => Connection is { } c ? new Bursar.Caching.Redis.RedisRateLimitCells(c) : null;

    private Bursar.Caching.Redis.RedisRunState? _runs;

    /// <summary>The shared run state, or null when no Redis is configured.</summary>
    public Bursar.Core.Runs.ISharedRunState? RunState(Bursar.Core.Runs.RunCapOptions caps) =>
        Connection is { } c ? _runs ??= new Bursar.Caching.Redis.RedisRunState(c, caps, time, holdTtl: options.Redis.RunHoldTtl) : null;

    public void Dispose()
    {
        _budgets?.Dispose();
        _runs?.Dispose();
        if (_connection.IsValueCreated) _connection.Value?.Dispose();
    }
}

/// <summary>The shared exact response cache's Redis connection (<c>Bursar:ResponseCache:Redis</c>), or null: entries and fill locks use it.</summary>
public sealed class ResponseCacheRedis(ResponseCacheOptions options) : IDisposable
{
    private readonly Lazy<StackExchange.Redis.ConnectionMultiplexer?> _connection = new(() =>
    {
        if (string.IsNullOrEmpty(options.Redis)) return null;
        // AbortOnConnectFail=false: the gateway starts (and serves, uncached) while Redis is unreachable, and reconnects on its own
        var config = StackExchange.Redis.ConfigurationOptions.Parse(options.Redis);
        config.AbortOnConnectFail = false;
        return StackExchange.Redis.ConnectionMultiplexer.Connect(config);
    });

    public StackExchange.Redis.ConnectionMultiplexer? Connection => _connection.Value;

    public void Dispose()
    {
        if (_connection.IsValueCreated) _connection.Value?.Dispose();
    }
}

/// <summary>One instance: nothing to share.</summary>
internal sealed class NoSharedSemanticEntries : ISharedSemanticEntries
{
    public static readonly NoSharedSemanticEntries Instance = new();
    public ValueTask PublishAsync(string partition, string question, Core.Caching.CachedResponse response, TimeSpan ttl) => ValueTask.CompletedTask;
    public Task FollowAsync(Func<string, string, Core.Caching.CachedResponse, Task> onEntry, CancellationToken cancellationToken) => Task.CompletedTask;
}

/// <summary>
/// Keeps this instance's semantic index warm from the shared entries (when the semantic cache is on for some feature
/// and its entries are shared): what is stored at start, then what other instances announce; re-followed after an outage.
/// </summary>
public sealed partial class SemanticCacheSync(SemanticResponseCache cache, ISharedSemanticEntries shared, TimeProvider time, ILogger<SemanticCacheSync> logger) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        if (shared is NoSharedSemanticEntries || cache.Options.Features.Count == 0) return;
        await Task.Yield();
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                await shared.FollowAsync((p, q, r) => cache.AddAsync(p, q, r, stoppingToken), stoppingToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested) { return; }
            catch (Exception e)
            {
                LogFollowFailed(logger, e.Message);
                try { await Task.Delay(TimeSpan.FromSeconds(5), time, stoppingToken).ConfigureAwait(false); }
                catch (OperationCanceledException) { return; }
            }
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Following the shared semantic-cache entries failed ({Reason}); trying again in 5 s")]
    private static partial void LogFollowFailed(ILogger logger, string reason);
}
