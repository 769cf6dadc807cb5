using System.Text.Json;
using Bursar.Core.Budgets;
using Bursar.Core.Keys;
using Bursar.Core.Ledger;
using Bursar.Core.Limits;
using Bursar.Core.Pricing;
using Bursar.Core.Routing;
using Bursar.Core.Storage;
using Npgsql;
using NpgsqlTypes;

namespace Bursar.Storage.PostgreSql;

/// <summary>
/// The shared store for several gateway instances: the ledger, its report rollups, virtual keys, budgets, rate limits,
/// routes and imported prices in one PostgreSQL database. A ledger batch is written with binary <c>COPY</c> and its rollups
/// are upserted in the same transaction; money is <c>numeric</c> (exact decimals, never floating point).
/// </summary>
public sealed partial class PostgresStore : IBursarStore, IDisposable
{
    private readonly NpgsqlDataSource _data;
    private readonly NpgsqlDataSource _writes;
    private readonly TimeProvider _time;

    /// <param name="connectionString">An Npgsql connection string (<c>Host=...;Database=...;Username=...;Password=...</c>).</param>
    /// <param name="time">The clock for rollup retention and migration stamps.</param>
    /// <param name="migrate">Apply the schema migrations the database lacks (default); false expects them applied (<c>bursar db migrate</c>).</param>
    public PostgresStore(string connectionString, TimeProvider? time = null, bool migrate = true)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(connectionString);
        _time = time ?? TimeProvider.System;
        var builder = new NpgsqlConnectionStringBuilder(connectionString);
        Location = $"PostgreSQL {builder.Host}:{builder.Port}/{builder.Database ?? builder.Username}";
        _data = NpgsqlDataSource.Create(builder);
        if (migrate) PostgresMigrations.Apply(_data, _time);
        // ledger writes on connections of their own that keep their session across uses (no DISCARD ALL when pooled): the
        // staging table is made once per connection, not created and dropped by every batch (catalog churn), and the
        // batch statements stay prepared
        var writes = new NpgsqlConnectionStringBuilder(builder.ConnectionString)
        {
            NoResetOnClose = true, MaxPoolSize = Math.Min(builder.MaxPoolSize, 4), MaxAutoPrepare = Math.Max(builder.MaxAutoPrepare, 16), AutoPrepareMinUsages = 2,
            Options = ((builder.Options ?? "") + " -c client_min_messages=warning").Trim(),
        };
        _writes = NpgsqlDataSource.Create(writes);
    }

    /// <summary>Host, port and database (never the password).</summary>
    public string Location { get; }

    /// <summary>The data source, for tools and tests that run their own SQL.</summary>
    public NpgsqlDataSource DataSource => _data;

    public void Dispose()
    {
        _writes.Dispose();
        _data.Dispose();
    }

    private long _copyTicks, _insertTicks, _rollupTicks, _commitTicks, _written;

    /// <summary>Where ledger writes spent their time so far (copy, move into the ledger, rollups, commit), for benchmarks and diagnostics.</summary>
    public PostgresWriteStats WriteStats => new(Interlocked.Read(ref _written), TimeSpan.FromTicks(Interlocked.Read(ref _copyTicks)),
        TimeSpan.FromTicks(Interlocked.Read(ref _insertTicks)), TimeSpan.FromTicks(Interlocked.Read(ref _rollupTicks)), TimeSpan.FromTicks(Interlocked.Read(ref _commitTicks)));

    private static void Lap(ref long total, ref long mark)
    {
        var now = System.Diagnostics.Stopwatch.GetTimestamp();
        Interlocked.Add(ref total, System.Diagnostics.Stopwatch.GetElapsedTime(mark, now).Ticks);
        mark = now;
    }

    // ---------------------------------------------------------------- helpers

    private async Task<List<T>> QueryAsync<T>(string sql, Func<NpgsqlDataReader, T> map, CancellationToken ct, params (string Name, object? Value)[] args)
    {
        await using var c = await _data.OpenConnectionAsync(ct).ConfigureAwait(false);
        await using var cmd = new NpgsqlCommand(sql, c);
        foreach (var (name, value) in args) cmd.Parameters.AddWithValue(name, value ?? DBNull.Value);
        await using var r = await cmd.ExecuteReaderAsync(ct).ConfigureAwait(false);
        var list = new List<T>();
        while (await r.ReadAsync(ct).ConfigureAwait(false)) list.Add(map(r));
        return list;
    }

    private async Task<int> NonQueryAsync(string sql, CancellationToken ct, params (string Name, object? Value)[] args)
    {
        await using var c = await _data.OpenConnectionAsync(ct).ConfigureAwait(false);
        await using var cmd = new NpgsqlCommand(sql, c);
        foreach (var (name, value) in args) cmd.Parameters.AddWithValue(name, value ?? DBNull.Value);
        return await cmd.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
    }

    /// <summary>
    /// PostgreSQL text holds no NUL character and only well-formed UTF-8: a NUL or a lone surrogate (possible in a caller's tag or a
    /// provider's error text) becomes U+FFFD, so one odd record never fails the batch it travels in. Other text is returned as it is.
    /// </summary>
    internal static string Clean(string s)
    {
        var i = 0;
        for (; i < s.Length; i++)
        {
            var ch = s[i];
            if (ch == '\0') break;
            if (char.IsHighSurrogate(ch))
            {
                if (i + 1 < s.Length && char.IsLowSurrogate(s[i + 1])) { i++; continue; }
                break;
            }
            if (char.IsLowSurrogate(ch)) break;
        }
        if (i == s.Length) return s;
        var chars = s.ToCharArray();
        for (var j = i; j < chars.Length; j++)
        {
            var ch = chars[j];
            if (ch == '\0') chars[j] = '\uFFFD';
            else if (char.IsHighSurrogate(ch))
            {
                if (j + 1 < chars.Length && char.IsLowSurrogate(chars[j + 1])) j++;
                else chars[j] = '\uFFFD';
            }
            else if (char.IsLowSurrogate(ch)) chars[j] = '\uFFFD';
        }
        return new string(chars);
    }

    /// <summary>
    /// A <c>numeric</c> sum read as text: exact in the database, it may carry more significant digits than a decimal's 28-29 (amounts of
    /// very different scales added up); parsing rounds it as decimal addition would have, where reading it as a decimal would overflow.
    /// </summary>
    internal static decimal ParseMoney(string s) => decimal.Parse(s, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture);

    private static object Db(string? s) => s is null ? DBNull.Value : Clean(s);
    private static DateTimeOffset Utc(DateTimeOffset t) => t.ToUniversalTime();

    // ---------------------------------------------------------------- ledger

    private const string LedgerColumnList =
        "id, ts, ts_unix_ms, key_id, team, customer, feature, route, task, template, run_id, dialect, provider, requested_model, served_model, " +
        "streamed, batch, input_tokens, cache_read_tokens, cache_write_5m_tokens, cache_write_1h_tokens, output_tokens, reasoning_tokens, " +
        "priced, cost, counterfactual_cost, saving_routing, saving_response_cache, saving_prompt_cache, saving_batch, saving_compaction, saving_output_cap, " +
        "latency_ms, ttft_ms, outcome, status_code, error_type, error_message, finish_reason, upstream_request_id, " +
        "routing_reason, run_end_reason, volatile_prefix, reported_cost, prefix_hash, prefix_tokens, usage_estimated, batch_id, custom_id, context_tokens_removed, context_strategy";

    /// <summary>One ledger row in <see cref="LedgerColumnList"/> order, for binary COPY.</summary>
    private static void WriteRow(NpgsqlBinaryImporter w, LedgerRecord r)
    {
        void Text(string? s) { if (s is null) w.WriteNull(); else w.Write(Clean(s), NpgsqlDbType.Text); }
        void Money(decimal? d) { if (d is { } v) w.Write(v, NpgsqlDbType.Numeric); else w.WriteNull(); }
        w.StartRow();
        w.Write(Clean(r.Id), NpgsqlDbType.Text);
        w.Write(Utc(r.Timestamp), NpgsqlDbType.TimestampTz);
        w.Write(r.Timestamp.ToUnixTimeMilliseconds(), NpgsqlDbType.Bigint);
        Text(r.KeyId); Text(r.Team); Text(r.Customer); Text(r.Feature); Text(r.Route); Text(r.Task); Text(r.Template); Text(r.RunId);
        w.Write(Clean(r.Dialect), NpgsqlDbType.Text);
        Text(r.Provider); Text(r.RequestedModel); Text(r.ServedModel);
        w.Write(r.Streamed, NpgsqlDbType.Boolean);
        w.Write(r.Batch, NpgsqlDbType.Boolean);
        w.Write(r.InputTokens, NpgsqlDbType.Bigint);
        w.Write(r.CacheReadTokens, NpgsqlDbType.Bigint);
        w.Write(r.CacheWrite5mTokens, NpgsqlDbType.Bigint);
        w.Write(r.CacheWrite1hTokens, NpgsqlDbType.Bigint);
        w.Write(r.OutputTokens, NpgsqlDbType.Bigint);
        w.Write(r.ReasoningTokens, NpgsqlDbType.Bigint);
        w.Write(r.Priced, NpgsqlDbType.Boolean);
        Money(r.Cost); Money(r.CounterfactualCost);
        Money(r.SavingRouting); Money(r.SavingResponseCache); Money(r.SavingPromptCache); Money(r.SavingBatch); Money(r.SavingCompaction); Money(r.SavingOutputCap);
        w.Write(r.LatencyMs, NpgsqlDbType.Double);
        if (r.TimeToFirstTokenMs is { } ttft) w.Write(ttft, NpgsqlDbType.Double); else w.WriteNull();
        w.Write(Clean(r.Outcome), NpgsqlDbType.Text);
        w.Write(r.StatusCode, NpgsqlDbType.Integer);
        Text(r.ErrorType); Text(r.ErrorMessage); Text(r.FinishReason); Text(r.UpstreamRequestId);
        Text(r.RoutingReason); Text(r.RunEndReason); Text(r.VolatilePrefix);
        Money(r.ReportedCost);
        Text(r.PrefixHash);
        w.Write(r.PrefixTokens, NpgsqlDbType.Bigint);
        w.Write(r.UsageEstimated, NpgsqlDbType.Boolean);
        Text(r.BatchId); Text(r.CustomId);
        w.Write(r.ContextTokensRemoved, NpgsqlDbType.Bigint);
        Text(r.ContextStrategy);
    }

    /// <summary>Reads one ledger row whose columns start at <paramref name="o"/> in <see cref="LedgerColumnList"/> order.</summary>
    private static LedgerRecord ReadLedger(NpgsqlDataReader r, int o)
    {
        string? S(int i) => r.IsDBNull(o + i) ? null : r.GetString(o + i);
        decimal? D(int i) => r.IsDBNull(o + i) ? null : r.GetDecimal(o + i);
        return new LedgerRecord
        {
            Id = r.GetString(o + 0),
            Timestamp = DateTimeOffset.FromUnixTimeMilliseconds(r.GetInt64(o + 2)),
            KeyId = S(3), Team = S(4), Customer = S(5), Feature = S(6), Route = S(7), Task = S(8), Template = S(9), RunId = S(10),
            Dialect = r.GetString(o + 11), Provider = S(12), RequestedModel = S(13), ServedModel = S(14),
            Streamed = r.GetBoolean(o + 15), Batch = r.GetBoolean(o + 16),
            InputTokens = r.GetInt64(o + 17), CacheReadTokens = r.GetInt64(o + 18), CacheWrite5mTokens = r.GetInt64(o + 19),
            CacheWrite1hTokens = r.GetInt64(o + 20), OutputTokens = r.GetInt64(o + 21), ReasoningTokens = r.GetInt64(o + 22),
            Priced = r.GetBoolean(o + 23), Cost = D(24), CounterfactualCost = D(25),
            SavingRouting = D(26) ?? 0, SavingResponseCache = D(27) ?? 0, SavingPromptCache = D(28) ?? 0,
            SavingBatch = D(29) ?? 0, SavingCompaction = D(30) ?? 0, SavingOutputCap = D(31) ?? 0,
            LatencyMs = r.GetDouble(o + 32), TimeToFirstTokenMs = r.IsDBNull(o + 33) ? null : r.GetDouble(o + 33),
            Outcome = r.GetString(o + 34), StatusCode = r.GetInt32(o + 35), ErrorType = S(36), ErrorMessage = S(37),
            FinishReason = S(38), UpstreamRequestId = S(39), RoutingReason = S(40), RunEndReason = S(41), VolatilePrefix = S(42),
            ReportedCost = D(43), PrefixHash = S(44), PrefixTokens = r.GetInt64(o + 45), UsageEstimated = r.GetBoolean(o + 46),
            BatchId = S(47), CustomId = S(48),
            ContextTokensRemoved = r.GetInt64(o + 49), ContextStrategy = S(50),
        };
    }

    /// <summary>
    /// Writes a batch idempotently by id, its new rows (a replayed record is not counted twice) added to the report rollups in
    /// the same transaction: a report never sees a row without its rollup or the reverse. The ids already in the ledger are
    /// looked up first and only the new rows are copied (binary COPY) straight into the ledger; should another writer insert
    /// one of them meanwhile (a unique violation), the batch is written again through a staging table moved into the ledger
    /// with <c>ON CONFLICT DO NOTHING</c>.
    /// </summary>
    public async Task WriteAsync(IReadOnlyList<LedgerRecord> records, CancellationToken cancellationToken)
    {
        if (records.Count == 0) return;
        try
        {
            await WriteBatchAsync(records, staged: false, cancellationToken).ConfigureAwait(false);
        }
        catch (PostgresException e) when (e.SqlState == PostgresErrorCodes.UniqueViolation)
        {
            await WriteBatchAsync(records, staged: true, cancellationToken).ConfigureAwait(false);
        }
        Interlocked.Add(ref _written, records.Count);
    }

    /// <summary>Batches that met a concurrent writer's row and were written again through the staging table.</summary>
    public long StagedWrites => Interlocked.Read(ref _staged);

    private long _staged;

    private async Task WriteBatchAsync(IReadOnlyList<LedgerRecord> records, bool staged, CancellationToken cancellationToken)
    {
        var mark = System.Diagnostics.Stopwatch.GetTimestamp();
        await using var c = await _writes.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using var tx = await c.BeginTransactionAsync(cancellationToken).ConfigureAwait(false);
        List<LedgerRecord> fresh;
        if (!staged)
        {
            // the first record of each id the ledger lacks (a batch may carry one id twice: the later copy is ignored, as in SQLite)
            var known = new HashSet<string>(StringComparer.Ordinal);
            await using (var look = new NpgsqlCommand("SELECT id FROM ledger WHERE id = ANY(@ids)", c, tx))
            {
                look.Parameters.AddWithValue("ids", records.Select(r => Clean(r.Id)).ToArray());
                await using var r = await look.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
                while (await r.ReadAsync(cancellationToken).ConfigureAwait(false)) known.Add(r.GetString(0));
            }
            fresh = new List<LedgerRecord>(records.Count - known.Count);
            foreach (var r in records)
                if (known.Add(Clean(r.Id))) fresh.Add(r);
            Lap(ref _insertTicks, ref mark);
            if (fresh.Count > 0)
            {
                await using var copy = await c.BeginBinaryImportAsync($"COPY ledger ({LedgerColumnList}) FROM STDIN (FORMAT BINARY)", cancellationToken).ConfigureAwait(false);
                foreach (var r in fresh) WriteRow(copy, r);
                await copy.CompleteAsync(cancellationToken).ConfigureAwait(false);
            }
            Lap(ref _copyTicks, ref mark);
        }
        else
        {
            Interlocked.Increment(ref _staged);
            // the connection's own staging table, emptied by every commit (and by a rollback, which undoes the copy)
            await using (var create = new NpgsqlCommand("CREATE TEMP TABLE IF NOT EXISTS ledger_in (LIKE ledger) ON COMMIT DELETE ROWS", c, tx))
                await create.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
            await using (var copy = await c.BeginBinaryImportAsync($"COPY ledger_in ({LedgerColumnList}) FROM STDIN (FORMAT BINARY)", cancellationToken).ConfigureAwait(false))
            {
                foreach (var r in records) WriteRow(copy, r);
                await copy.CompleteAsync(cancellationToken).ConfigureAwait(false);
            }
            Lap(ref _copyTicks, ref mark);
            var inserted = new HashSet<string>(StringComparer.Ordinal);
            await using (var move = new NpgsqlCommand($"INSERT INTO ledger ({LedgerColumnList}) SELECT {LedgerColumnList} FROM ledger_in ON CONFLICT (id) DO NOTHING RETURNING id", c, tx))
            await using (var r = await move.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false))
                while (await r.ReadAsync(cancellationToken).ConfigureAwait(false)) inserted.Add(r.GetString(0));
            fresh = new List<LedgerRecord>(inserted.Count);
            foreach (var r in records)
                if (inserted.Remove(Clean(r.Id))) fresh.Add(r);
            Lap(ref _insertTicks, ref mark);
        }
        await UpdateRollupsAsync(c, tx, fresh, cancellationToken).ConfigureAwait(false);
        Lap(ref _rollupTicks, ref mark);
        await tx.CommitAsync(cancellationToken).ConfigureAwait(false);
        Lap(ref _commitTicks, ref mark);
    }

    public async Task<IReadOnlyList<LedgerRecord>> ReadAsync(LedgerQuery query, CancellationToken cancellationToken)
    {
        var where = "ts_unix_ms >= @from AND ts_unix_ms < @to" + (query.Routes is null ? "" : " AND route = ANY(@routes)");
        var sql = query.Newest
            ? $"SELECT * FROM (SELECT {LedgerColumnList} FROM ledger WHERE {where} ORDER BY ts_unix_ms DESC, id DESC LIMIT @limit) newest ORDER BY ts_unix_ms, id"
            : $"SELECT {LedgerColumnList} FROM ledger WHERE {where} ORDER BY ts_unix_ms, id LIMIT @limit";
        var args = new List<(string, object?)>
        {
            ("from", query.From?.ToUnixTimeMilliseconds() ?? long.MinValue),
            ("to", query.To?.ToUnixTimeMilliseconds() ?? long.MaxValue),
            ("limit", (long)query.Limit),
        };
        if (query.Routes is { } routes) args.Add(("routes", routes.Select(Clean).ToArray()));
        return await QueryAsync(sql, r => ReadLedger(r, 0), cancellationToken, [.. args]).ConfigureAwait(false);
    }

    public async Task<long> CountAsync(CancellationToken cancellationToken) =>
        (await QueryAsync("SELECT COUNT(*) FROM ledger", r => r.GetInt64(0), cancellationToken).ConfigureAwait(false))[0];

    // ---------------------------------------------------------------- keys

    private const string KeyColumns = "id, hash, prefix, name, team, customer, feature, allowed_tags, created_at, revoked_at, downgrade_model, unpriced_policy, allowed_customers";

    public Task AddAsync(VirtualKey key, CancellationToken cancellationToken) =>
        NonQueryAsync($"INSERT INTO keys ({KeyColumns}) VALUES (@id, @hash, @prefix, @name, @team, @customer, @feature, @allowed, @created, NULL, @downgrade, @unpriced, @customers)", cancellationToken,
            ("id", key.Id), ("hash", key.Hash), ("prefix", key.Prefix), ("name", Db(key.Name)), ("team", Db(key.Team)), ("customer", Db(key.Customer)), ("feature", Db(key.Feature)),
            ("allowed", key.AllowedTagHeaders is null ? null : Clean(string.Join(',', key.AllowedTagHeaders))),
            ("created", Utc(key.CreatedAt)), ("downgrade", Db(key.DowngradeModel)), ("unpriced", Db(key.UnpricedPolicy)),
            ("customers", key.AllowedCustomers is null ? null : JsonSerializer.Serialize(key.AllowedCustomers)));

    public async Task<VirtualKey?> FindByHashAsync(string hash, CancellationToken cancellationToken) =>
        (await QueryAsync($"SELECT {KeyColumns} FROM keys WHERE hash = @h", ReadKey, cancellationToken, ("h", Clean(hash))).ConfigureAwait(false)).FirstOrDefault();

    public async Task<IReadOnlyList<VirtualKey>> ListAsync(CancellationToken cancellationToken) =>
        await QueryAsync($"SELECT {KeyColumns} FROM keys ORDER BY created_at, id", ReadKey, cancellationToken).ConfigureAwait(false);

    public async Task<bool> RevokeAsync(string idOrPrefix, DateTimeOffset when, CancellationToken cancellationToken) =>
        await NonQueryAsync("UPDATE keys SET revoked_at = @when WHERE (id = @k OR prefix = @k) AND revoked_at IS NULL", cancellationToken,
            ("when", Utc(when)), ("k", Clean(idOrPrefix))).ConfigureAwait(false) > 0;

    private static VirtualKey ReadKey(NpgsqlDataReader r)
    {
        string? S(int i) => r.IsDBNull(i) ? null : r.GetString(i);
        return new VirtualKey
        {
            Id = r.GetString(0), Hash = r.GetString(1), Prefix = r.GetString(2), Name = S(3), Team = S(4), Customer = S(5), Feature = S(6),
            AllowedTagHeaders = S(7)?.Split(',', StringSplitOptions.RemoveEmptyEntries),
            CreatedAt = r.GetFieldValue<DateTimeOffset>(8),
            RevokedAt = r.IsDBNull(9) ? null : r.GetFieldValue<DateTimeOffset>(9),
            DowngradeModel = S(10),
            UnpricedPolicy = S(11) ?? "allow",
            AllowedCustomers = S(12) is { } ac ? JsonSerializer.Deserialize<string[]>(ac) : null,
        };
    }

    // ---------------------------------------------------------------- prices

    private static readonly JsonSerializerOptions PriceJson = new(JsonSerializerDefaults.Web);

    public int ImportPrices(IEnumerable<ModelPrice> prices, DateTimeOffset when)
    {
        using var c = _data.OpenConnection();
        using var tx = c.BeginTransaction();
        using var cmd = new NpgsqlCommand("INSERT INTO prices (model, source, entry, imported_at) VALUES (@m, @s, @e, @t) ON CONFLICT (model) DO UPDATE SET source = excluded.source, entry = excluded.entry, imported_at = excluded.imported_at", c, tx);
        var pm = cmd.Parameters.Add("m", NpgsqlDbType.Text);
        var ps = cmd.Parameters.Add("s", NpgsqlDbType.Text);
        var pe = cmd.Parameters.Add("e", NpgsqlDbType.Text);
        cmd.Parameters.AddWithValue("t", Utc(when));
        var n = 0;
        foreach (var p in prices)
        {
            pm.Value = Clean(p.Model);
            ps.Value = Clean(p.Source);
            pe.Value = JsonSerializer.Serialize(p, PriceJson);
            cmd.ExecuteNonQuery();
            n++;
        }
        tx.Commit();
        return n;
    }

    public IReadOnlyList<ModelPrice> LoadImportedPrices()
    {
        using var c = _data.OpenConnection();
        using var cmd = new NpgsqlCommand("SELECT entry FROM prices ORDER BY model", c);
        using var r = cmd.ExecuteReader();
        var list = new List<ModelPrice>();
        while (r.Read()) list.Add(JsonSerializer.Deserialize<ModelPrice>(r.GetString(0), PriceJson)!);
        return list;
    }

    // ---------------------------------------------------------------- budgets and rate limits

    public async Task<IReadOnlyList<BudgetDefinition>> ListBudgetsAsync(CancellationToken cancellationToken) =>
        await QueryAsync("SELECT id, scope, value, period, limit_usd, soft_fraction, time_zone, reset_at FROM budgets ORDER BY id", r => new BudgetDefinition
        {
            Id = r.GetString(0),
            Scope = Enum.Parse<BudgetScope>(r.GetString(1)),
            Value = r.IsDBNull(2) ? null : r.GetString(2),
            Period = Enum.Parse<BudgetPeriod>(r.GetString(3)),
            LimitUsd = r.GetDecimal(4),
            SoftLimitFraction = r.GetDecimal(5),
            TimeZone = r.GetString(6),
            ResetAt = r.IsDBNull(7) ? null : r.GetFieldValue<DateTimeOffset>(7),
        }, cancellationToken).ConfigureAwait(false);

    public Task UpsertBudgetAsync(BudgetDefinition b, CancellationToken cancellationToken)
    {
        b.Validate();
        return NonQueryAsync("INSERT INTO budgets (id, scope, value, period, limit_usd, soft_fraction, time_zone) VALUES (@id, @scope, @value, @period, @limit, @soft, @tz) " +
            "ON CONFLICT (id) DO UPDATE SET scope = excluded.scope, value = excluded.value, period = excluded.period, limit_usd = excluded.limit_usd, soft_fraction = excluded.soft_fraction, time_zone = excluded.time_zone",
            cancellationToken,
            ("id", Clean(b.Id)), ("scope", b.Scope.ToString()), ("value", Db(b.Value)), ("period", b.Period.ToString()), ("limit", b.LimitUsd), ("soft", b.SoftLimitFraction), ("tz", b.TimeZone));
    }

    public async Task<bool> DeleteBudgetAsync(string id, CancellationToken cancellationToken) =>
        await NonQueryAsync("DELETE FROM budgets WHERE id = @id", cancellationToken, ("id", Clean(id))).ConfigureAwait(false) > 0;

    public async Task<bool> ResetBudgetAsync(string id, DateTimeOffset when, CancellationToken cancellationToken) =>
        await NonQueryAsync("UPDATE budgets SET reset_at = @t WHERE id = @id", cancellationToken, ("t", Utc(when)), ("id", Clean(id))).ConfigureAwait(false) > 0;

    /// <summary>The settled spend as an exact <c>numeric</c> sum in the database.</summary>
    public async Task<decimal> SpentSinceAsync(BudgetDefinition b, DateTimeOffset since, CancellationToken cancellationToken)
    {
        var column = b.Scope switch
        {
            BudgetScope.Key => "key_id",
            BudgetScope.Team => "team",
            BudgetScope.Customer => "customer",
            BudgetScope.Feature => "feature",
            BudgetScope.Model => "served_model",
            _ => null,
        };
        var sql = "SELECT COALESCE(SUM(cost), 0)::text FROM ledger WHERE cost IS NOT NULL AND ts_unix_ms >= @since" + (column is null ? "" : $" AND {column} = @value");
        var since64 = since == DateTimeOffset.MinValue ? long.MinValue : since.ToUnixTimeMilliseconds();
        var rows = column is null
            ? await QueryAsync(sql, r => ParseMoney(r.GetString(0)), cancellationToken, ("since", since64)).ConfigureAwait(false)
            : await QueryAsync(sql, r => ParseMoney(r.GetString(0)), cancellationToken, ("since", since64), ("value", Db(b.Value))).ConfigureAwait(false);
        return rows[0];
    }

    public async Task<IReadOnlyList<RateLimitDefinition>> ListRateLimitsAsync(CancellationToken cancellationToken) =>
        await QueryAsync("SELECT scope, value, rpm, tpm FROM rate_limits ORDER BY scope, value",
            r => new RateLimitDefinition(Enum.Parse<RateLimitScope>(r.GetString(0)), r.GetString(1), r.IsDBNull(2) ? null : r.GetInt32(2), r.IsDBNull(3) ? null : r.GetInt64(3)),
            cancellationToken).ConfigureAwait(false);

    public Task UpsertRateLimitAsync(RateLimitDefinition l, CancellationToken cancellationToken)
    {
        l.Validate();
        return NonQueryAsync("INSERT INTO rate_limits (scope, value, rpm, tpm) VALUES (@s, @v, @rpm, @tpm) ON CONFLICT (scope, value) DO UPDATE SET rpm = excluded.rpm, tpm = excluded.tpm",
            cancellationToken, ("s", l.Scope.ToString()), ("v", Clean(l.Value)), ("rpm", l.RequestsPerMinute), ("tpm", l.TokensPerMinute));
    }

    public async Task<bool> DeleteRateLimitAsync(RateLimitScope scope, string value, CancellationToken cancellationToken) =>
        await NonQueryAsync("DELETE FROM rate_limits WHERE scope = @s AND value = @v", cancellationToken, ("s", scope.ToString()), ("v", Clean(value))).ConfigureAwait(false) > 0;

    // ---------------------------------------------------------------- routes

    public async Task<IReadOnlyList<StoredRoute>> ListRoutesAsync(CancellationToken cancellationToken) =>
        await QueryAsync("SELECT name, priority, policy FROM routes ORDER BY priority, name", r =>
        {
            var policy = StoredRoute.Parse(r.GetString(2));
            policy.Name = r.GetString(0);
            return new StoredRoute(r.GetString(0), r.GetInt32(1), policy);
        }, cancellationToken).ConfigureAwait(false);

    public Task UpsertRouteAsync(StoredRoute route, CancellationToken cancellationToken) =>
        NonQueryAsync("INSERT INTO routes (name, priority, policy) VALUES (@n, @p, @j) ON CONFLICT (name) DO UPDATE SET priority = excluded.priority, policy = excluded.policy",
            cancellationToken, ("n", Clean(route.Name)), ("p", route.Priority), ("j", Clean(route.ToJson())));

    public async Task<bool> DeleteRouteAsync(string name, CancellationToken cancellationToken) =>
        await NonQueryAsync("DELETE FROM routes WHERE name = @n", cancellationToken, ("n", Clean(name))).ConfigureAwait(false) > 0;
}

/// <summary>Cumulative time of the PostgreSQL store's ledger writes by phase.</summary>
/// <summary>
/// Where ledger writes spent their time: <see cref="Copy"/> the binary COPY (straight into the ledger, or into the staging
/// table for a batch that met a concurrent writer), <see cref="MoveIntoLedger"/> the id lookup before it (or the staged
/// batch's move with ON CONFLICT DO NOTHING), the rollup upserts and the commit.
/// </summary>
public sealed record PostgresWriteStats(long Records, TimeSpan Copy, TimeSpan MoveIntoLedger, TimeSpan Rollups, TimeSpan Commit);
