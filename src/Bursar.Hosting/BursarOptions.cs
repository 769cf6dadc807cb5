using Bursar.Core.Pricing;

namespace Bursar.Hosting;

/// <summary>The <c>Bursar</c> configuration section. Validated once at startup.</summary>
public sealed class BursarOptions
{
    public const string Section = "Bursar";

    /// <summary>Folder for the SQLite file and the ledger spool. Default <c>.bursar</c> in the working directory.</summary>
    public string DataDirectory { get; set; } = ".bursar";

    /// <summary>SQLite file; default <c>{DataDirectory}/bursar.db</c>.</summary>
    public string? DatabasePath { get; set; }

    /// <summary>Largest request body accepted, in bytes. Default 32 MB (Anthropic's Messages limit).</summary>
    public long MaxRequestBodyBytes { get; set; } = 32 * 1024 * 1024;

    /// <summary>Claude tokens per o200k token for pre-call estimates. Default 1.15.</summary>
    public double ClaudeTokenFactor { get; set; } = 1.15;

    /// <summary>How long a looked-up virtual key is trusted before it is read again (revocations take effect within this). Default 5 s.</summary>
    public TimeSpan KeyCacheDuration { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>Per-deployment price overrides, USD per million tokens; they win over built-in and imported prices.</summary>
    public List<PriceOverride> Prices { get; set; } = [];

    /// <summary>The admin API key (<c>/admin/...</c>). The admin API is disabled while it is empty.</summary>
    public string? AdminKey { get; set; }

    /// <summary>How long a dashboard sign-in lasts, from the moment of signing in (fixed, not sliding). Default 8 hours.</summary>
    public TimeSpan DashboardSessionLifetime { get; set; } = TimeSpan.FromHours(8);

    /// <summary>Wrong admin keys (API calls and dashboard sign-ins) one client IP may send within a minute before its admin requests get 429 for the rest of that minute. Default 10.</summary>
    public int AdminMaxFailuresPerMinute { get; set; } = 10;

    /// <summary>How often budgets and rate limits are re-read from the store (changes made with the CLI). Default 5 s.</summary>
    public TimeSpan PolicyRefreshInterval { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// Where the ledger, keys, budgets, limits, routes and prices live: <c>sqlite</c> (the default: one file in the data directory,
    /// for one gateway) or <c>postgres</c> (<c>Bursar:Postgres:ConnectionString</c>; one database shared by several gateway instances).
    /// </summary>
    public string Store { get; set; } = "sqlite";

    /// <summary>The PostgreSQL store (<c>Bursar:Store=postgres</c>).</summary>
    public PostgresStoreOptions Postgres { get; set; } = new();

    /// <summary>Redis for what several gateway instances must count together (<c>Bursar:Redis:Configuration</c>: budgets, rate limits, run state). Unset: counted in each process.</summary>
    public RedisOptions Redis { get; set; } = new();

    public bool UsesPostgres => string.Equals(Store, "postgres", StringComparison.OrdinalIgnoreCase);

    public string ResolvedDatabasePath => DatabasePath ?? Path.Combine(DataDirectory, "bursar.db");

    public string SpoolDirectory => Path.Combine(DataDirectory, "spool");

    public void Validate()
    {
        if (MaxRequestBodyBytes < 1024) throw new InvalidOperationException($"Bursar:MaxRequestBodyBytes must be at least 1024, not {MaxRequestBodyBytes}.");
        if (DashboardSessionLifetime <= TimeSpan.Zero || DashboardSessionLifetime > TimeSpan.FromDays(30))
            throw new InvalidOperationException($"Bursar:DashboardSessionLifetime must be more than zero and at most 30 days, not {DashboardSessionLifetime}.");
        if (AdminMaxFailuresPerMinute is < 1 or > 10_000)
            throw new InvalidOperationException($"Bursar:AdminMaxFailuresPerMinute must be 1-10000, not {AdminMaxFailuresPerMinute}.");
        if (ClaudeTokenFactor is <= 0 or > 10) throw new InvalidOperationException($"Bursar:ClaudeTokenFactor must be in (0, 10], not {ClaudeTokenFactor}.");
        foreach (var p in Prices) p.Validate();
        if (!UsesPostgres && !string.Equals(Store, "sqlite", StringComparison.OrdinalIgnoreCase))
            throw new InvalidOperationException($"Bursar:Store must be sqlite or postgres, not '{Store}'.");
        if (UsesPostgres) Postgres.Validate();
        Redis.Validate();
    }
}

/// <summary>The <c>Bursar:Redis</c> section.</summary>
public sealed class RedisOptions
{
    /// <summary>A StackExchange.Redis configuration string (<c>redis:6379</c>, <c>host:6380,password=...,ssl=true</c>). Unset: no shared counters.</summary>
    public string? Configuration { get; set; }

    /// <summary>How long the money held by a gateway instance's calls in flight outlives the instance (killed, cut off). Default 30 s.</summary>
    public TimeSpan HoldTtl { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// How long what a gateway instance's calls in flight hold against their runs (a turn and the worst case, for the
    /// run caps) outlives the instance. Longer than any call should take, since a call outliving it while its instance
    /// is cut off from Redis stops holding. Default 10 minutes.
    /// </summary>
    public TimeSpan RunHoldTtl { get; set; } = TimeSpan.FromMinutes(10);

    public bool Enabled => !string.IsNullOrWhiteSpace(Configuration);

    public void Validate()
    {
        if (HoldTtl < TimeSpan.FromSeconds(1) || HoldTtl > TimeSpan.FromMinutes(10))
            throw new InvalidOperationException($"Bursar:Redis:HoldTtl must be between 00:00:01 and 00:10:00, not {HoldTtl}.");
        if (RunHoldTtl < TimeSpan.FromSeconds(1) || RunHoldTtl > TimeSpan.FromDays(1))
            throw new InvalidOperationException($"Bursar:Redis:RunHoldTtl must be between 00:00:01 and 1.00:00:00, not {RunHoldTtl}.");
        if (!Enabled) return;
        // the message names the problem, never the string itself (it may hold a password)
        try { _ = StackExchange.Redis.ConfigurationOptions.Parse(Configuration!); }
        catch (ArgumentException e) { throw new InvalidOperationException($"Bursar:Redis:Configuration is not a valid Redis configuration: {e.Message}"); }
    }
}

/// <summary>The <c>Bursar:Postgres</c> section.</summary>
public sealed class PostgresStoreOptions
{
    /// <summary>An Npgsql connection string: <c>Host=db;Port=5432;Database=bursar;Username=bursar;Password=...</c>.</summary>
    public string? ConnectionString { get; set; }

    public void Validate()
    {
        if (string.IsNullOrWhiteSpace(ConnectionString))
            throw new InvalidOperationException("Bursar:Store is postgres but Bursar:Postgres:ConnectionString is empty (Host=...;Database=...;Username=...;Password=...).");
        Npgsql.NpgsqlConnectionStringBuilder parsed;
        // the message names the problem, never the string itself (it may hold a password)
        try { parsed = new Npgsql.NpgsqlConnectionStringBuilder(ConnectionString); }
        catch (ArgumentException e) { throw new InvalidOperationException($"Bursar:Postgres:ConnectionString is not a valid Npgsql connection string: {e.Message}"); }
        if (string.IsNullOrWhiteSpace(parsed.Host)) throw new InvalidOperationException("Bursar:Postgres:ConnectionString names no Host.");
    }
}

/// <summary>A configured price: <c>{"Model":"my-llama","Provider":"local","Input":0,"Output":0}</c>.</summary>
public sealed class PriceOverride
{
    public string Model { get; set; } = "";
    public string Provider { get; set; } = "custom";
    public decimal? Input { get; set; }
    public decimal? Output { get; set; }
    public decimal? CacheRead { get; set; }
    public decimal? CacheWrite5m { get; set; }
    public decimal? CacheWrite1h { get; set; }
    public decimal? Reasoning { get; set; }
    public List<string> Aliases { get; set; } = [];
    public long? ContextWindow { get; set; }

    public void Validate()
    {
        if (string.IsNullOrWhiteSpace(Model)) throw new InvalidOperationException("A Bursar:Prices entry has no Model.");
        if (Input is null || Output is null) throw new InvalidOperationException($"Bursar:Prices entry '{Model}' needs both Input and Output (USD per million tokens).");
        if (Input < 0 || Output < 0 || CacheRead < 0 || CacheWrite5m < 0 || CacheWrite1h < 0 || Reasoning < 0)
            throw new InvalidOperationException($"Bursar:Prices entry '{Model}' has a negative rate.");
    }

    public ModelPrice ToPrice() => new()
    {
        Model = Model,
        Provider = Provider,
        Rates = new PriceRates { Input = Input!.Value, Output = Output!.Value, CacheRead = CacheRead, CacheWrite5m = CacheWrite5m, CacheWrite1h = CacheWrite1h, Reasoning = Reasoning },
        Aliases = Aliases,
        ContextWindow = ContextWindow,
        Source = "config",
    };
}
