using System.Globalization;
using System.Text.Json;
using Bursar.Core.Budgets;
using Bursar.Core.Keys;
using Bursar.Core.Limits;
using Bursar.Core.Ledger;
using Bursar.Core.Pricing;
using Microsoft.Data.Sqlite;

namespace Bursar.Storage.Sqlite;

/// <summary>
/// The embedded default store: one SQLite file in WAL mode holding the ledger, virtual keys and imported prices.
/// Money is stored as exact decimal text, never as floating point.
/// </summary>
public sealed partial class SqliteStore : Bursar.Core.Storage.IBursarStore
{
    private readonly string _connectionString;

    private readonly Action<string> _progress;

    /// <param name="path">The database file (created with its folder when missing).</param>
    /// <param name="progress">Told about long work on open (rebuilding report rollups from a large ledger); default stderr.</param>
    private readonly TimeProvider _time;

    public SqliteStore(string path, Action<string>? progress = null, TimeProvider? time = null)
    {
        _progress = progress ?? (m => Console.Error.WriteLine(m));
        _time = time ?? TimeProvider.System;
        Path = System.IO.Path.GetFullPath(path);
        var dir = System.IO.Path.GetDirectoryName(Path);
        if (!string.IsNullOrEmpty(dir)) Directory.CreateDirectory(dir);
        _connectionString = new SqliteConnectionStringBuilder { DataSource = Path, Mode = SqliteOpenMode.ReadWriteCreate, Cache = SqliteCacheMode.Private, DefaultTimeout = 30, Pooling = true }.ToString();
        Migrate();
    }

    public string Path { get; }

    public string Location => Path;

    private SqliteConnection Open()
    {
        var c = new SqliteConnection(_connectionString);
        c.Open();
        using var cmd = c.CreateCommand();
        cmd.CommandText = "PRAGMA busy_timeout=30000; PRAGMA synchronous=NORMAL;";
        cmd.ExecuteNonQuery();
        // exact decimal money in SQL: addition for rollup upserts, a sum for grouped reads
        SQLitePCL.raw.sqlite3_create_function(c.Handle!, "dec_add", 2, SQLitePCL.raw.SQLITE_UTF8 | SQLitePCL.raw.SQLITE_DETERMINISTIC, null, DecAdd);
        c.CreateAggregate("dec_sum", 0m, (decimal acc, string? v) => v is null ? acc : acc + ParseDec(v), acc => Dec(acc), isDeterministic: true);
        return c;
    }

    private void Migrate()
    {
        using var c = Open();
        using var cmd = c.CreateCommand();
        cmd.CommandText = """
            PRAGMA journal_mode=WAL;
            CREATE TABLE IF NOT EXISTS ledger (
              id TEXT PRIMARY KEY,
              ts TEXT NOT NULL,
              ts_unix_ms INTEGER NOT NULL,
              key_id TEXT, team TEXT, customer TEXT, feature TEXT, route TEXT, task TEXT, template TEXT, run_id TEXT,
              dialect TEXT NOT NULL, provider TEXT, requested_model TEXT, served_model TEXT,
              streamed INTEGER NOT NULL, batch INTEGER NOT NULL,
              input_tokens INTEGER NOT NULL, cache_read_tokens INTEGER NOT NULL, cache_write_5m_tokens INTEGER NOT NULL,
              cache_write_1h_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL, reasoning_tokens INTEGER NOT NULL,
              priced INTEGER NOT NULL, cost TEXT, counterfactual_cost TEXT,
              saving_routing TEXT NOT NULL, saving_response_cache TEXT NOT NULL, saving_prompt_cache TEXT NOT NULL,
              saving_batch TEXT NOT NULL, saving_compaction TEXT NOT NULL, saving_output_cap TEXT NOT NULL,
              latency_ms REAL NOT NULL, ttft_ms REAL,
              outcome TEXT NOT NULL, status_code INTEGER NOT NULL, error_type TEXT, error_message TEXT, finish_reason TEXT, upstream_request_id TEXT
            );
            CREATE INDEX IF NOT EXISTS ledger_ts ON ledger(ts_unix_ms);
            CREATE TABLE IF NOT EXISTS keys (
              id TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, prefix TEXT NOT NULL, name TEXT, team TEXT, customer TEXT, feature TEXT,
              allowed_tags TEXT, created_at TEXT NOT NULL, revoked_at TEXT
            );
            CREATE TABLE IF NOT EXISTS prices (model TEXT PRIMARY KEY, source TEXT NOT NULL, entry TEXT NOT NULL, imported_at TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS budgets (id TEXT PRIMARY KEY, scope TEXT NOT NULL, value TEXT, period TEXT NOT NULL, limit_usd TEXT NOT NULL, soft_fraction TEXT NOT NULL, time_zone TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS rate_limits (scope TEXT NOT NULL, value TEXT NOT NULL, rpm INTEGER, tpm INTEGER, PRIMARY KEY (scope, value));
            CREATE TABLE IF NOT EXISTS routes (name TEXT PRIMARY KEY, priority INTEGER NOT NULL, policy TEXT NOT NULL);
            """;
        cmd.ExecuteNonQuery();
        // columns added after the first release: add them to older files
        AddColumn(c, "ledger", "routing_reason", "TEXT");
        AddColumn(c, "ledger", "run_end_reason", "TEXT");
        AddColumn(c, "ledger", "volatile_prefix", "TEXT");
        AddColumn(c, "ledger", "reported_cost", "TEXT");
        AddColumn(c, "ledger", "prefix_hash", "TEXT");
        AddColumn(c, "ledger", "prefix_tokens", "INTEGER");
        AddColumn(c, "ledger", "usage_estimated", "INTEGER NOT NULL DEFAULT 0");
        AddColumn(c, "ledger", "batch_id", "TEXT");
        AddColumn(c, "ledger", "custom_id", "TEXT");
        AddColumn(c, "ledger", "context_tokens_removed", "INTEGER NOT NULL DEFAULT 0");
        AddColumn(c, "ledger", "context_strategy", "TEXT");
        AddColumn(c, "keys", "downgrade_model", "TEXT");
        AddColumn(c, "keys", "unpriced_policy", "TEXT");
        AddColumn(c, "keys", "allowed_customers", "TEXT");
        AddColumn(c, "budgets", "reset_at", "TEXT");
        using var idx = c.CreateCommand();
        idx.CommandText = "CREATE INDEX IF NOT EXISTS ledger_customer_ts ON ledger(customer, ts_unix_ms); CREATE INDEX IF NOT EXISTS ledger_team_ts ON ledger(team, ts_unix_ms); CREATE INDEX IF NOT EXISTS ledger_route_ts ON ledger(route, ts_unix_ms) WHERE route IS NOT NULL;";
        idx.ExecuteNonQuery();
        MigrateRollups(c);
        MigrateBatches(c);
    }

    /// <summary>Runs one query with named parameters and maps every row.</summary>
    private List<T> Query<T>(string sql, Func<SqliteDataReader, T> map, params (string Name, object? Value)[] args)
    {
        using var c = Open();
        using var cmd = c.CreateCommand();
        cmd.CommandText = sql;
        foreach (var (name, value) in args) cmd.Parameters.AddWithValue(name, value ?? DBNull.Value);
        using var r = cmd.ExecuteReader();
        var list = new List<T>();
        while (r.Read()) list.Add(map(r));
        return list;
    }

    private const string KeyColumns = "id, hash, prefix, name, team, customer, feature, allowed_tags, created_at, revoked_at, downgrade_model, unpriced_policy, allowed_customers";

    /// <summary>Runs one statement with named parameters; returns the rows changed.</summary>
    private int NonQuery(string sql, params (string Name, object? Value)[] args)
    {
        using var c = Open();
        using var cmd = c.CreateCommand();
        cmd.CommandText = sql;
        foreach (var (name, value) in args) cmd.Parameters.AddWithValue(name, value ?? DBNull.Value);
        return cmd.ExecuteNonQuery();
    }

    private static void AddColumn(SqliteConnection c, string table, string column, string type)
    {
        using var check = c.CreateCommand();
        check.CommandText = $"SELECT COUNT(*) FROM pragma_table_info('{table}') WHERE name = '{column}'";
        if ((long)check.ExecuteScalar()! > 0) return;
        using var alter = c.CreateCommand();
        alter.CommandText = $"ALTER TABLE {table} ADD COLUMN {column} {type}";
        alter.ExecuteNonQuery();
    }

    // ---------------------------------------------------------------- ledger

    /// <summary>Each ledger column and how it is bound: one list serves the INSERT statement and its values (bound without boxing).</summary>
    private static readonly (string Column, Action<RowBinder, LedgerRecord> Bind)[] LedgerWrite =
    [
        ("id", (b, r) => b.Text(r.Id)),
        ("ts", (b, r) => b.Time(r.Timestamp)),
        ("ts_unix_ms", (b, r) => b.Int(r.Timestamp.ToUnixTimeMilliseconds())),
        ("key_id", (b, r) => b.Text(r.KeyId)),
        ("team", (b, r) => b.Text(r.Team)),
        ("customer", (b, r) => b.Text(r.Customer)),
        ("feature", (b, r) => b.Text(r.Feature)),
        ("route", (b, r) => b.Text(r.Route)),
        ("task", (b, r) => b.Text(r.Task)),
        ("template", (b, r) => b.Text(r.Template)),
        ("run_id", (b, r) => b.Text(r.RunId)),
        ("dialect", (b, r) => b.Text(r.Dialect)),
        ("provider", (b, r) => b.Text(r.Provider)),
        ("requested_model", (b, r) => b.Text(r.RequestedModel)),
        ("served_model", (b, r) => b.Text(r.ServedModel)),
        ("streamed", (b, r) => b.Int(r.Streamed ? 1 : 0)),
        ("batch", (b, r) => b.Int(r.Batch ? 1 : 0)),
        ("input_tokens", (b, r) => b.Int(r.InputTokens)),
        ("cache_read_tokens", (b, r) => b.Int(r.CacheReadTokens)),
        ("cache_write_5m_tokens", (b, r) => b.Int(r.CacheWrite5mTokens)),
        ("cache_write_1h_tokens", (b, r) => b.Int(r.CacheWrite1hTokens)),
        ("output_tokens", (b, r) => b.Int(r.OutputTokens)),
        ("reasoning_tokens", (b, r) => b.Int(r.ReasoningTokens)),
        ("priced", (b, r) => b.Int(r.Priced ? 1 : 0)),
        ("cost", (b, r) => b.Money(r.Cost)),
        ("counterfactual_cost", (b, r) => b.Money(r.CounterfactualCost)),
        ("saving_routing", (b, r) => b.Money(r.SavingRouting)),
        ("saving_response_cache", (b, r) => b.Money(r.SavingResponseCache)),
        ("saving_prompt_cache", (b, r) => b.Money(r.SavingPromptCache)),
        ("saving_batch", (b, r) => b.Money(r.SavingBatch)),
        ("saving_compaction", (b, r) => b.Money(r.SavingCompaction)),
        ("saving_output_cap", (b, r) => b.Money(r.SavingOutputCap)),
        ("latency_ms", (b, r) => b.Real(r.LatencyMs)),
        ("ttft_ms", (b, r) => b.Real(r.TimeToFirstTokenMs)),
        ("outcome", (b, r) => b.Text(r.Outcome)),
        ("status_code", (b, r) => b.Int(r.StatusCode)),
        ("error_type", (b, r) => b.Text(r.ErrorType)),
        ("error_message", (b, r) => b.Text(r.ErrorMessage)),
        ("finish_reason", (b, r) => b.Text(r.FinishReason)),
        ("upstream_request_id", (b, r) => b.Text(r.UpstreamRequestId)),
        ("routing_reason", (b, r) => b.Text(r.RoutingReason)),
        ("run_end_reason", (b, r) => b.Text(r.RunEndReason)),
        ("volatile_prefix", (b, r) => b.Text(r.VolatilePrefix)),
        ("reported_cost", (b, r) => b.Money(r.ReportedCost)),
        ("prefix_hash", (b, r) => b.Text(r.PrefixHash)),
        ("prefix_tokens", (b, r) => b.Int(r.PrefixTokens)),
        ("usage_estimated", (b, r) => b.Int(r.UsageEstimated ? 1 : 0)),
        ("batch_id", (b, r) => b.Text(r.BatchId)),
        ("custom_id", (b, r) => b.Text(r.CustomId)),
        ("context_tokens_removed", (b, r) => b.Int(r.ContextTokensRemoved)),
        ("context_strategy", (b, r) => b.Text(r.ContextStrategy)),
    ];

    private static readonly string[] LedgerColumns = LedgerWrite.Select(c => c.Column).ToArray();

    public Task WriteAsync(IReadOnlyList<LedgerRecord> records, CancellationToken cancellationToken)
    {
        using var c = Open();
        using var tx = c.BeginTransaction();
        var inserted = new List<LedgerRecord>(records.Count);
        using (var insert = new RowBinder(c.Handle!, LedgerInsertSql))
        {
            foreach (var r in records)
            {
                cancellationToken.ThrowIfCancellationRequested();
                insert.Begin();
                foreach (var (_, bind) in LedgerWrite) bind(insert, r);
                if (insert.Execute() == 1) inserted.Add(r); // a replayed record (already stored) is not counted twice
            }
        }
        UpdateRollups(c, tx, inserted);
        tx.Commit();
        return Task.CompletedTask;
    }

    private static readonly string LedgerInsertSql =
        $"INSERT OR IGNORE INTO ledger ({string.Join(',', LedgerWrite.Select(c => c.Column))}) VALUES ({string.Join(',', LedgerWrite.Select((_, i) => "?" + (i + 1).ToString(CultureInfo.InvariantCulture)))})";

    /// <summary>
    /// One prepared statement whose values are bound straight through SQLite's C API: text as UTF-16 spans (SQLite
    /// copies them), numbers as numbers, money as exact decimal text formatted on the stack. The ledger write is the
    /// store's hot path (a row per call); binding through ADO.NET parameters boxed every value and allocated a binder
    /// per parameter per row.
    /// </summary>
    private sealed class RowBinder : IDisposable
    {
        private readonly SQLitePCL.sqlite3 _db;
        private readonly SQLitePCL.sqlite3_stmt _stmt;
        private int _next;

        public RowBinder(SQLitePCL.sqlite3 db, string sql)
        {
            _db = db;
            Check(SQLitePCL.raw.sqlite3_prepare_v2(db, sql, out _stmt));
        }

        public void Begin()
        {
            SQLitePCL.raw.sqlite3_reset(_stmt);
            _next = 1;
        }

        public void Text(string? value) => Check(value is null ? SQLitePCL.raw.sqlite3_bind_null(_stmt, _next++) : SQLitePCL.raw.sqlite3_bind_text16(_stmt, _next++, value.AsSpan()));

        public void Int(long value) => Check(SQLitePCL.raw.sqlite3_bind_int64(_stmt, _next++, value));

        public void Real(double? value) => Check(value is { } v ? SQLitePCL.raw.sqlite3_bind_double(_stmt, _next++, v) : SQLitePCL.raw.sqlite3_bind_null(_stmt, _next++));

        /// <summary>Money as its exact decimal text (the ledger never stores a binary float).</summary>
        public void Money(decimal? value)
        {
            if (value is not { } d)
            {
                Check(SQLitePCL.raw.sqlite3_bind_null(_stmt, _next++));
                return;
            }
            Span<char> text = stackalloc char[64];
            if (!d.TryFormat(text, out var n, default, CultureInfo.InvariantCulture)) throw new InvalidOperationException($"Cannot format {d} as ledger money.");
            Check(SQLitePCL.raw.sqlite3_bind_text16(_stmt, _next++, text[..n]));
        }

        /// <summary>The timestamp as round-trip UTC text (<c>O</c>), as the ledger has always stored it.</summary>
        public void Time(DateTimeOffset value)
        {
            Span<char> text = stackalloc char[40];
            if (!value.UtcDateTime.TryFormat(text, out var n, "O", CultureInfo.InvariantCulture)) throw new InvalidOperationException($"Cannot format {value} as a ledger timestamp.");
            Check(SQLitePCL.raw.sqlite3_bind_text16(_stmt, _next++, text[..n]));
        }

        /// <summary>Runs the statement; returns the rows it changed (0 when the record was already stored).</summary>
        public int Execute()
        {
            var rc = SQLitePCL.raw.sqlite3_step(_stmt);
            if (rc != SQLitePCL.raw.SQLITE_DONE) Check(rc);
            return SQLitePCL.raw.sqlite3_changes(_db);
        }

        private void Check(int rc)
        {
            if (rc is SQLitePCL.raw.SQLITE_OK or SQLitePCL.raw.SQLITE_DONE or SQLitePCL.raw.SQLITE_ROW) return;
            throw new SqliteException($"SQLite Error {rc}: '{SQLitePCL.raw.sqlite3_errmsg(_db).utf8_to_string()}'.", rc);
        }

        public void Dispose() => _stmt.Dispose();
    }

    /// <summary>
    /// <c>dec_add(a, b)</c>: the exact sum of two decimal texts, read and written as UTF-8 on the stack (each rollup
    /// upsert calls it once per money column; through ADO.NET's function binding every call made three strings).
    /// </summary>
    private static readonly SQLitePCL.delegate_function_scalar DecAdd = static (ctx, _, args) =>
    {
        var sum = DecArg(args[0]) + DecArg(args[1]);
        Span<byte> text = stackalloc byte[64];
        if (!sum.TryFormat(text, out var n, default, CultureInfo.InvariantCulture)) throw new InvalidOperationException($"Cannot format {sum} as ledger money.");
        SQLitePCL.raw.sqlite3_result_text(ctx, text[..n]);
    };

    private static decimal DecArg(SQLitePCL.sqlite3_value v)
    {
        if (SQLitePCL.raw.sqlite3_value_type(v) == SQLitePCL.raw.SQLITE_NULL) return 0m;
        var z = SQLitePCL.raw.sqlite3_value_text(v);
        var utf8 = System.Runtime.InteropServices.MemoryMarshal.CreateReadOnlySpan(in z.GetPinnableReference(), SQLitePCL.raw.sqlite3_value_bytes(v));
        return decimal.Parse(utf8, NumberStyles.Float, CultureInfo.InvariantCulture);
    }

    private static object Db(string? s) => s is null ? DBNull.Value : s;
    private static object Db(decimal? d) => d is null ? DBNull.Value : Dec(d.Value);
    private static string Dec(decimal d) => d.ToString(CultureInfo.InvariantCulture);
    private static decimal ParseDec(string s) => decimal.Parse(s, NumberStyles.Float, CultureInfo.InvariantCulture);

    public Task<IReadOnlyList<LedgerRecord>> ReadAsync(LedgerQuery query, CancellationToken cancellationToken)
    {
        using var c = Open();
        using var cmd = c.CreateCommand();
        var where = "ts_unix_ms >= $from AND ts_unix_ms < $to";
        if (query.Routes is { } routes)
        {
            where += $" AND route IN ({string.Join(',', routes.Select((_, i) => "$r" + i))})";
            for (var i = 0; i < routes.Count; i++) cmd.Parameters.AddWithValue("$r" + i, routes[i]);
        }
        cmd.CommandText = query.Newest
            ? $"SELECT * FROM (SELECT {string.Join(',', LedgerColumns)} FROM ledger WHERE {where} ORDER BY ts_unix_ms DESC LIMIT $limit) ORDER BY ts_unix_ms"
            : $"SELECT {string.Join(',', LedgerColumns)} FROM ledger WHERE {where} ORDER BY ts_unix_ms LIMIT $limit";
        cmd.Parameters.AddWithValue("$from", query.From?.ToUnixTimeMilliseconds() ?? long.MinValue);
        cmd.Parameters.AddWithValue("$to", query.To?.ToUnixTimeMilliseconds() ?? long.MaxValue);
        cmd.Parameters.AddWithValue("$limit", query.Limit);
        using var r = cmd.ExecuteReader();
        var list = new List<LedgerRecord>();
        while (r.Read()) list.Add(ReadLedger(r, 0));
        return Task.FromResult<IReadOnlyList<LedgerRecord>>(list);
    }

    /// <summary>Reads one ledger row whose columns start at <paramref name="o"/> in <see cref="LedgerColumns"/> order.</summary>
    private static LedgerRecord ReadLedger(SqliteDataReader r, int o)
    {
        string? S(int i) => r.IsDBNull(i) ? null : r.GetString(i);
        decimal? D(int i) => r.IsDBNull(i) ? null : ParseDec(r.GetString(i));
        return new LedgerRecord
        {
            Id = r.GetString(o + 0),
            Timestamp = DateTimeOffset.FromUnixTimeMilliseconds(r.GetInt64(o + 2)),
            KeyId = S(o + 3), Team = S(o + 4), Customer = S(o + 5), Feature = S(o + 6), Route = S(o + 7), Task = S(o + 8), Template = S(o + 9), RunId = S(o + 10),
            Dialect = r.GetString(o + 11), Provider = S(o + 12), RequestedModel = S(o + 13), ServedModel = S(o + 14),
            Streamed = r.GetInt64(o + 15) != 0, Batch = r.GetInt64(o + 16) != 0,
            InputTokens = r.GetInt64(o + 17), CacheReadTokens = r.GetInt64(o + 18), CacheWrite5mTokens = r.GetInt64(o + 19),
            CacheWrite1hTokens = r.GetInt64(o + 20), OutputTokens = r.GetInt64(o + 21), ReasoningTokens = r.GetInt64(o + 22),
            Priced = r.GetInt64(o + 23) != 0, Cost = D(o + 24), CounterfactualCost = D(o + 25),
            SavingRouting = D(o + 26) ?? 0, SavingResponseCache = D(o + 27) ?? 0, SavingPromptCache = D(o + 28) ?? 0,
            SavingBatch = D(o + 29) ?? 0, SavingCompaction = D(o + 30) ?? 0, SavingOutputCap = D(o + 31) ?? 0,
            LatencyMs = r.GetDouble(o + 32), TimeToFirstTokenMs = r.IsDBNull(o + 33) ? null : r.GetDouble(o + 33),
            Outcome = r.GetString(o + 34), StatusCode = (int)r.GetInt64(o + 35), ErrorType = S(o + 36), ErrorMessage = S(o + 37),
            FinishReason = S(o + 38), UpstreamRequestId = S(o + 39), RoutingReason = S(o + 40), RunEndReason = S(o + 41), VolatilePrefix = S(o + 42),
            ReportedCost = D(o + 43),
            PrefixHash = S(o + 44), PrefixTokens = r.IsDBNull(o + 45) ? 0 : r.GetInt64(o + 45),
            UsageEstimated = !r.IsDBNull(o + 46) && r.GetInt64(o + 46) != 0,
            BatchId = S(o + 47), CustomId = S(o + 48),
            ContextTokensRemoved = r.IsDBNull(o + 49) ? 0 : r.GetInt64(o + 49), ContextStrategy = S(o + 50),
        };
    }

    public Task<long> CountAsync(CancellationToken cancellationToken)
    {
        using var c = Open();
        using var cmd = c.CreateCommand();
        cmd.CommandText = "SELECT COUNT(*) FROM ledger";
        return Task.FromResult((long)cmd.ExecuteScalar()!);
    }

    // ---------------------------------------------------------------- keys

    public Task AddAsync(VirtualKey key, CancellationToken cancellationToken)
    {
        NonQuery($"INSERT INTO keys ({KeyColumns}) VALUES ($id,$hash,$prefix,$name,$team,$customer,$feature,$allowed,$created,NULL,$downgrade,$unpriced,$customers)",
            ("$id", key.Id), ("$hash", key.Hash), ("$prefix", key.Prefix), ("$name", key.Name), ("$team", key.Team), ("$customer", key.Customer), ("$feature", key.Feature),
            ("$allowed", key.AllowedTagHeaders is null ? null : string.Join(',', key.AllowedTagHeaders)),
            ("$created", key.CreatedAt.ToString("O", CultureInfo.InvariantCulture)), ("$downgrade", key.DowngradeModel), ("$unpriced", key.UnpricedPolicy),
            ("$customers", key.AllowedCustomers is null ? null : JsonSerializer.Serialize(key.AllowedCustomers)));
        return Task.CompletedTask;
    }

    public Task<VirtualKey?> FindByHashAsync(string hash, CancellationToken cancellationToken) =>
        Task.FromResult(Query($"SELECT {KeyColumns} FROM keys WHERE hash = $h", ReadKey, ("$h", hash)).FirstOrDefault());

    public Task<IReadOnlyList<VirtualKey>> ListAsync(CancellationToken cancellationToken) =>
        Task.FromResult<IReadOnlyList<VirtualKey>>(Query($"SELECT {KeyColumns} FROM keys ORDER BY created_at", ReadKey));

    public Task<bool> RevokeAsync(string idOrPrefix, DateTimeOffset when, CancellationToken cancellationToken) =>
        Task.FromResult(NonQuery("UPDATE keys SET revoked_at = $when WHERE (id = $k OR prefix = $k) AND revoked_at IS NULL",
            ("$when", when.ToString("O", CultureInfo.InvariantCulture)), ("$k", idOrPrefix)) > 0);

    private static VirtualKey ReadKey(SqliteDataReader r)
    {
        string? S(int i) => r.IsDBNull(i) ? null : r.GetString(i);
        return new VirtualKey
        {
            Id = r.GetString(0), Hash = r.GetString(1), Prefix = r.GetString(2), Name = S(3), Team = S(4), Customer = S(5), Feature = S(6),
            AllowedTagHeaders = S(7)?.Split(',', StringSplitOptions.RemoveEmptyEntries),
            CreatedAt = DateTimeOffset.Parse(r.GetString(8), CultureInfo.InvariantCulture),
            RevokedAt = S(9) is { } rv ? DateTimeOffset.Parse(rv, CultureInfo.InvariantCulture) : null,
            DowngradeModel = S(10),
            UnpricedPolicy = S(11) ?? "allow",
            AllowedCustomers = S(12) is { } ac ? JsonSerializer.Deserialize<string[]>(ac) : null,
        };
    }

    // ---------------------------------------------------------------- prices

    private static readonly JsonSerializerOptions PriceJson = new(JsonSerializerDefaults.Web);

    /// <summary>Stores imported prices (replacing earlier imports of the same model); they override the built-in catalog.</summary>
    public int ImportPrices(IEnumerable<ModelPrice> prices, DateTimeOffset when)
    {
        using var c = Open();
        using var tx = c.BeginTransaction();
        using var cmd = c.CreateCommand();
        cmd.Transaction = tx;
        cmd.CommandText = "INSERT INTO prices (model, source, entry, imported_at) VALUES ($m,$s,$e,$t) ON CONFLICT(model) DO UPDATE SET source=excluded.source, entry=excluded.entry, imported_at=excluded.imported_at";
        var pm = cmd.Parameters.Add("$m", SqliteType.Text);
        var ps = cmd.Parameters.Add("$s", SqliteType.Text);
        var pe = cmd.Parameters.Add("$e", SqliteType.Text);
        cmd.Parameters.AddWithValue("$t", when.ToString("O", CultureInfo.InvariantCulture));
        var n = 0;
        foreach (var p in prices)
        {
            pm.Value = p.Model;
            ps.Value = p.Source;
            pe.Value = JsonSerializer.Serialize(p, PriceJson);
            cmd.ExecuteNonQuery();
            n++;
        }
        tx.Commit();
        return n;
    }

    public IReadOnlyList<ModelPrice> LoadImportedPrices() =>
        Query("SELECT entry FROM prices ORDER BY model", r => JsonSerializer.Deserialize<ModelPrice>(r.GetString(0), PriceJson)!);

    // ---------------------------------------------------------------- budgets and rate limits

    public Task<IReadOnlyList<BudgetDefinition>> ListBudgetsAsync(CancellationToken cancellationToken) =>
        Task.FromResult<IReadOnlyList<BudgetDefinition>>(Query("SELECT id, scope, value, period, limit_usd, soft_fraction, time_zone, reset_at FROM budgets ORDER BY id", r => new BudgetDefinition
        {
            Id = r.GetString(0),
            Scope = Enum.Parse<BudgetScope>(r.GetString(1)),
            Value = r.IsDBNull(2) ? null : r.GetString(2),
            Period = Enum.Parse<BudgetPeriod>(r.GetString(3)),
            LimitUsd = decimal.Parse(r.GetString(4), CultureInfo.InvariantCulture),
            SoftLimitFraction = decimal.Parse(r.GetString(5), CultureInfo.InvariantCulture),
            TimeZone = r.GetString(6),
            ResetAt = r.IsDBNull(7) ? null : DateTimeOffset.Parse(r.GetString(7), CultureInfo.InvariantCulture),
        }));

    public Task UpsertBudgetAsync(BudgetDefinition b, CancellationToken cancellationToken)
    {
        b.Validate();
        NonQuery("INSERT INTO budgets (id, scope, value, period, limit_usd, soft_fraction, time_zone) VALUES ($id,$scope,$value,$period,$limit,$soft,$tz) ON CONFLICT(id) DO UPDATE SET scope=excluded.scope, value=excluded.value, period=excluded.period, limit_usd=excluded.limit_usd, soft_fraction=excluded.soft_fraction, time_zone=excluded.time_zone",
            ("$id", b.Id), ("$scope", b.Scope.ToString()), ("$value", b.Value), ("$period", b.Period.ToString()), ("$limit", Dec(b.LimitUsd)), ("$soft", Dec(b.SoftLimitFraction)), ("$tz", b.TimeZone));
        return Task.CompletedTask;
    }

    public Task<bool> DeleteBudgetAsync(string id, CancellationToken cancellationToken) =>
        Task.FromResult(NonQuery("DELETE FROM budgets WHERE id = $id", ("$id", id)) > 0);

    public Task<bool> ResetBudgetAsync(string id, DateTimeOffset when, CancellationToken cancellationToken) =>
        Task.FromResult(NonQuery("UPDATE budgets SET reset_at = $t WHERE id = $id", ("$t", when.ToString("O", CultureInfo.InvariantCulture)), ("$id", id)) > 0);

    public Task<decimal> SpentSinceAsync(BudgetDefinition b, DateTimeOffset since, CancellationToken cancellationToken)
    {
        using var c = Open();
        using var cmd = c.CreateCommand();
        var column = b.Scope switch
        {
            BudgetScope.Key => "key_id",
            BudgetScope.Team => "team",
            BudgetScope.Customer => "customer",
            BudgetScope.Feature => "feature",
            BudgetScope.Model => "served_model",
            _ => null,
        };
        cmd.CommandText = "SELECT cost FROM ledger WHERE cost IS NOT NULL AND ts_unix_ms >= $since" + (column is null ? "" : $" AND {column} = $value");
        cmd.Parameters.AddWithValue("$since", since == DateTimeOffset.MinValue ? long.MinValue : since.ToUnixTimeMilliseconds());
        if (column is not null) cmd.Parameters.AddWithValue("$value", b.Value);
        using var r = cmd.ExecuteReader();
        decimal sum = 0;
        while (r.Read()) sum += decimal.Parse(r.GetString(0), NumberStyles.Float, CultureInfo.InvariantCulture);
        return Task.FromResult(sum);
    }

    public Task<IReadOnlyList<RateLimitDefinition>> ListRateLimitsAsync(CancellationToken cancellationToken) =>
        Task.FromResult<IReadOnlyList<RateLimitDefinition>>(Query("SELECT scope, value, rpm, tpm FROM rate_limits ORDER BY scope, value",
            r => new RateLimitDefinition(Enum.Parse<RateLimitScope>(r.GetString(0)), r.GetString(1), r.IsDBNull(2) ? null : (int)r.GetInt64(2), r.IsDBNull(3) ? null : r.GetInt64(3))));

    public Task UpsertRateLimitAsync(RateLimitDefinition l, CancellationToken cancellationToken)
    {
        l.Validate();
        NonQuery("INSERT INTO rate_limits (scope, value, rpm, tpm) VALUES ($s,$v,$rpm,$tpm) ON CONFLICT(scope, value) DO UPDATE SET rpm=excluded.rpm, tpm=excluded.tpm",
            ("$s", l.Scope.ToString()), ("$v", l.Value), ("$rpm", l.RequestsPerMinute), ("$tpm", l.TokensPerMinute));
        return Task.CompletedTask;
    }

    public Task<bool> DeleteRateLimitAsync(RateLimitScope scope, string value, CancellationToken cancellationToken) =>
        Task.FromResult(NonQuery("DELETE FROM rate_limits WHERE scope = $s AND value = $v", ("$s", scope.ToString()), ("$v", value)) > 0);

    // ---------------------------------------------------------------- routes

    public Task<IReadOnlyList<Bursar.Core.Routing.StoredRoute>> ListRoutesAsync(CancellationToken cancellationToken) =>
        Task.FromResult<IReadOnlyList<Bursar.Core.Routing.StoredRoute>>(Query("SELECT name, priority, policy FROM routes ORDER BY priority, name", r =>
        {
            var policy = Bursar.Core.Routing.StoredRoute.Parse(r.GetString(2));
            policy.Name = r.GetString(0);
            return new Bursar.Core.Routing.StoredRoute(r.GetString(0), (int)r.GetInt64(1), policy);
        }));

    public Task UpsertRouteAsync(Bursar.Core.Routing.StoredRoute route, CancellationToken cancellationToken)
    {
        NonQuery("INSERT INTO routes (name, priority, policy) VALUES ($n, $p, $j) ON CONFLICT(name) DO UPDATE SET priority = excluded.priority, policy = excluded.policy",
            ("$n", route.Name), ("$p", route.Priority), ("$j", route.ToJson()));
        return Task.CompletedTask;
    }

    public Task<bool> DeleteRouteAsync(string name, CancellationToken cancellationToken) =>
        Task.FromResult(NonQuery("DELETE FROM routes WHERE name = $n", ("$n", name)) > 0);
}
