using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Bursar.Core.Ledger;
using Bursar.Core.Pricing;
using Bursar.Core.Usage;

namespace Bursar.Core.Import;

/// <summary>Options for reading call logs that did not pass through Bursar.</summary>
public sealed record CallLogImportOptions
{
    /// <summary>When true, <c>input_tokens</c> excludes cached tokens (Anthropic's shape). Default false: input includes cached reads, as OpenAI and most cost trackers log it.</summary>
    public bool InputExcludesCached { get; init; }

    /// <summary>A row's own cost disagrees with the catalog when they differ by more than this share (default 1%) and by more than $0.000001.</summary>
    public decimal CostTolerance { get; init; } = 0.01m;

    /// <summary>Tags added to every imported row (e.g. <c>team=search</c>).</summary>
    public IReadOnlyDictionary<string, string> Tags { get; init; } = new Dictionary<string, string>();
}

public enum ImportItemKind { Record, Skipped, CostMismatch, Unpriced }

/// <summary>One thing a row of a log produced: its ledger record, or a problem with it.</summary>
public sealed record ImportItem(ImportItemKind Kind, LedgerRecord? Record, ImportProblem? Problem);

/// <summary>A row that could not be imported, or was imported with a warning.</summary>
public sealed record ImportProblem(int Line, string Message);

/// <summary>What an import read: the ledger records, the rows skipped (with the reason) and the rows flagged.</summary>
public sealed record ImportResult(IReadOnlyList<LedgerRecord> Records, IReadOnlyList<ImportProblem> Skipped, IReadOnlyList<ImportProblem> CostMismatches, IReadOnlyList<ImportProblem> Unpriced)
{
    public decimal CatalogCost => Records.Sum(r => r.Cost ?? 0);
    public decimal ReportedCost => Records.Sum(r => r.ReportedCost ?? 0);
}

/// <summary>
/// Reads call logs (CSV with a header row, or JSONL) into ledger records priced from the catalog.
/// Recognised columns (any case, spaces or dashes for underscores): timestamp, model, task / task_type, feature, team, customer, template,
/// run_id, tags (JSON object or <c>k=v;k=v</c>), input_tokens / prompt_tokens, cached_tokens / cache_read_tokens, cache_write_tokens,
/// output_tokens / completion_tokens, cost / cost_usd, latency / latency_ms. Row ids derive from the row's content, so importing the
/// same file twice adds nothing the second time.
/// </summary>
public static class CallLogImporter
{
    private static readonly Dictionary<string, string> Aliases = new(StringComparer.OrdinalIgnoreCase)
    {
        ["timestamp"] = "timestamp", ["time"] = "timestamp", ["ts"] = "timestamp", ["date"] = "timestamp", ["created_at"] = "timestamp", ["datetime"] = "timestamp",
        ["model"] = "model", ["model_name"] = "model",
        ["task"] = "task", ["task_type"] = "task", ["tasktype"] = "task",
        ["feature"] = "feature", ["team"] = "team", ["customer"] = "customer", ["user"] = "customer", ["template"] = "template", ["prompt_version"] = "template",
        ["run_id"] = "run_id", ["tags"] = "tags", ["provider"] = "provider",
        ["input_tokens"] = "input", ["prompt_tokens"] = "input", ["input"] = "input", ["tokens_in"] = "input",
        ["cached_tokens"] = "cached", ["cache_read_tokens"] = "cached", ["cached_input_tokens"] = "cached", ["cache_read_input_tokens"] = "cached",
        ["cache_write_tokens"] = "cache_write", ["cache_creation_input_tokens"] = "cache_write",
        ["output_tokens"] = "output", ["completion_tokens"] = "output", ["output"] = "output", ["tokens_out"] = "output",
        ["cost"] = "cost", ["cost_usd"] = "cost", ["total_cost"] = "cost",
        ["latency"] = "latency", ["latency_ms"] = "latency", ["duration_ms"] = "latency",
    };

    /// <summary>Reads a whole log into memory (tests, small files). Large files: <see cref="Stream"/>.</summary>
    public static ImportResult Read(TextReader reader, string format, PriceCatalog catalog, CallLogImportOptions options)
    {
        var records = new List<LedgerRecord>();
        var skipped = new List<ImportProblem>();
        var mismatches = new List<ImportProblem>();
        var unpriced = new List<ImportProblem>();
        foreach (var item in Stream(reader, format, catalog, options))
        {
            switch (item.Kind)
            {
                case ImportItemKind.Record: records.Add(item.Record!); break;
                case ImportItemKind.Skipped: skipped.Add(item.Problem!); break;
                case ImportItemKind.CostMismatch: mismatches.Add(item.Problem!); break;
                case ImportItemKind.Unpriced: unpriced.Add(item.Problem!); break;
            }
        }
        return new ImportResult(records, skipped, mismatches, unpriced);
    }

    /// <summary>
    /// Reads a log row by row: each row yields its record (or why it was skipped), and a flag when its cost disagrees with the catalog or its
    /// model has no price. Memory stays flat: only a 16-byte hash per distinct line is kept (to number repeated identical lines).
    /// </summary>
    public static IEnumerable<ImportItem> Stream(TextReader reader, string format, PriceCatalog catalog, CallLogImportOptions options)
    {
        var seen = new Dictionary<UInt128, int>();
        foreach (var (line, fields, raw, error) in format.Equals("jsonl", StringComparison.OrdinalIgnoreCase) ? Jsonl(reader) : Csv(reader))
        {
            if (error is not null) { yield return new ImportItem(ImportItemKind.Skipped, null, new ImportProblem(line, error)); continue; }
            var h = System.IO.Hashing.XxHash128.HashToUInt128(Encoding.UTF8.GetBytes(raw));
            var occurrence = seen[h] = seen.GetValueOrDefault(h) + 1;
            if (Row(line, fields!, raw, occurrence, catalog, options, out var record, out var problem) is false)
            {
                yield return new ImportItem(ImportItemKind.Skipped, null, problem);
                continue;
            }
            yield return new ImportItem(ImportItemKind.Record, record, null);
            if (!record!.Priced)
                yield return new ImportItem(ImportItemKind.Unpriced, null, new ImportProblem(line, $"model '{record.ServedModel}' has no price: cost unknown (not $0); add it with `bursar prices import`"));
            else if (record.ReportedCost is { } reported && record.Cost is { } cost && Disagrees(reported, cost, options.CostTolerance))
                yield return new ImportItem(ImportItemKind.CostMismatch, null, new ImportProblem(line, $"model '{record.ServedModel}': the log says ${reported.ToString(CultureInfo.InvariantCulture)}, the catalog prices it at ${cost.ToString(CultureInfo.InvariantCulture)}"));
        }
    }

    private static bool Disagrees(decimal reported, decimal catalog, decimal tolerance)
    {
        var diff = Math.Abs(reported - catalog);
        return diff > 0.000001m && diff > tolerance * Math.Max(Math.Abs(reported), Math.Abs(catalog));
    }

    private static bool Row(int line, Dictionary<string, string> f, string raw, int occurrence, PriceCatalog catalog, CallLogImportOptions options,
        out LedgerRecord? record, out ImportProblem? problem)
    {
        record = null;
        problem = null;
        string? Get(string name) => f.TryGetValue(name, out var v) && !string.IsNullOrWhiteSpace(v) ? v.Trim() : null;
        bool Fail(string message, out ImportProblem? p) { p = new ImportProblem(line, message); return false; }
        if (Get("model") is not { } model) return Fail("no model: every row needs a 'model' column", out problem);
        if (Get("timestamp") is not { } ts) return Fail("no timestamp: every row needs a 'timestamp' column (ISO 8601 or Unix seconds)", out problem);
        DateTimeOffset when;
        if (long.TryParse(ts, NumberStyles.Integer, CultureInfo.InvariantCulture, out var unix)) when = unix > 100_000_000_000 ? DateTimeOffset.FromUnixTimeMilliseconds(unix) : DateTimeOffset.FromUnixTimeSeconds(unix);
        else if (!DateTimeOffset.TryParse(ts, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out when))
            return Fail($"timestamp '{ts}' is not a date (use ISO 8601 such as 2026-11-01T09:00:00Z, or Unix seconds)", out problem);
        var counts = new Dictionary<string, long>();
        foreach (var name in new[] { "input", "cached", "cache_write", "output" })
        {
            if (Get(name) is not { } s) { counts[name] = 0; continue; }
            if (!long.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out var n) || n < 0)
                return Fail($"{name} tokens '{s}' is not a whole number of tokens >= 0", out problem);
            counts[name] = n;
        }
        var input = options.InputExcludesCached ? counts["input"] : counts["input"] - counts["cached"] - counts["cache_write"];
        if (input < 0) return Fail($"input tokens ({counts["input"]}) are fewer than cached + cache-write tokens ({counts["cached"] + counts["cache_write"]}); if this log's input excludes cached tokens, import with --input-excludes-cached", out problem);
        decimal? reported = null;
        if (Get("cost") is { } c)
        {
            if (!decimal.TryParse(c.TrimStart('$'), NumberStyles.Float, CultureInfo.InvariantCulture, out var d) || d < 0) return Fail($"cost '{c}' is not an amount in USD >= 0", out problem);
            reported = d;
        }
        double latency = 0;
        if (Get("latency") is { } l && (!double.TryParse(l, NumberStyles.Float, CultureInfo.InvariantCulture, out latency) || latency < 0 || !double.IsFinite(latency)))
            return Fail($"latency '{l}' is not a number of milliseconds >= 0", out problem);
        var tags = new Dictionary<string, string>(options.Tags, StringComparer.OrdinalIgnoreCase);
        if (Get("tags") is { } t && !ParseTags(t, tags)) return Fail($"tags '{t}' are neither a JSON object nor k=v;k=v pairs", out problem);
        string? Tag(string name) => Get(name) ?? tags.GetValueOrDefault(name);
        var usage = new TokenUsage(input, counts["cached"], counts["cache_write"], 0, counts["output"]);
        var price = catalog.Find(model).Price;
        record = new LedgerRecord
        {
            Id = "imp_" + Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes($"{occurrence}\n{raw}")))[..32],
            Timestamp = when,
            Dialect = "import",
            Provider = Tag("provider"),
            RequestedModel = model,
            ServedModel = model,
            Feature = Tag("feature"), Team = Tag("team"), Customer = Tag("customer"), Task = Tag("task"), Template = Tag("template"), RunId = Tag("run_id"),
            InputTokens = usage.InputTokens, CacheReadTokens = usage.CacheReadTokens, CacheWrite5mTokens = usage.CacheWrite5mTokens, OutputTokens = usage.OutputTokens,
            Priced = price is not null || usage.IsEmpty,
            Cost = price is not null ? CostCalculator.Compute(price, usage).Total : usage.IsEmpty ? 0m : null,
            SavingPromptCache = price is not null ? CostCalculator.PromptCacheSaving(price, usage) : 0m,
            CounterfactualCost = price is not null ? CostCalculator.Compute(price, usage).Total + CostCalculator.PromptCacheSaving(price, usage) : usage.IsEmpty ? 0m : null,
            ReportedCost = reported,
            LatencyMs = latency,
            Outcome = "ok",
            StatusCode = 200,
        };
        return true;
    }

    private static bool ParseTags(string s, Dictionary<string, string> into)
    {
        if (s.StartsWith('{'))
        {
            try
            {
                using var doc = JsonDocument.Parse(s);
                foreach (var p in doc.RootElement.EnumerateObject()) into[p.Name] = p.Value.ValueKind == JsonValueKind.String ? p.Value.GetString()! : p.Value.GetRawText();
                return true;
            }
            catch (Exception e) when (e is JsonException or ArgumentException) { return false; }
        }
        foreach (var pair in s.Split([';', ','], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var eq = pair.IndexOf('=');
            if (eq <= 0) return false;
            into[pair[..eq].Trim()] = pair[(eq + 1)..].Trim();
        }
        return true;
    }

    private static string Canonical(string header) => Aliases.GetValueOrDefault(header.Trim().Replace(' ', '_').Replace('-', '_'), header.Trim().ToLowerInvariant());

    private static IEnumerable<(int Line, Dictionary<string, string>? Fields, string Raw, string? Error)> Jsonl(TextReader reader)
    {
        var n = 0;
        while (reader.ReadLine() is { } line)
        {
            n++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            Dictionary<string, string>? fields = null;
            string? error = null;
            try
            {
                using var doc = JsonDocument.Parse(line);
                if (doc.RootElement.ValueKind != JsonValueKind.Object) error = "not a JSON object";
                else
                {
                    fields = new Dictionary<string, string>(StringComparer.Ordinal);
                    foreach (var p in doc.RootElement.EnumerateObject())
                        fields[Canonical(p.Name)] = p.Value.ValueKind switch
                        {
                            JsonValueKind.String => p.Value.GetString()!,
                            JsonValueKind.Null => "",
                            _ => p.Value.GetRawText(),
                        };
                }
            }
            catch (JsonException e) { error = "not valid JSON: " + e.Message; }
            catch (ArgumentException e) { error = "not valid text (a broken character encoding?): " + e.Message; }
            yield return (n, fields, line, error);
        }
    }

    private static IEnumerable<(int Line, Dictionary<string, string>? Fields, string Raw, string? Error)> Csv(TextReader reader)
    {
        string[]? header = null;
        var line = 0;
        foreach (var (startLine, cells, raw) in CsvRecords(reader))
        {
            line = startLine;
            if (header is null)
            {
                header = cells.Select(Canonical).ToArray();
                continue;
            }
            if (cells.Count == 1 && cells[0].Length == 0) continue;
            if (cells.Count != header.Length)
            {
                yield return (line, null, raw, $"has {cells.Count} fields, the header has {header.Length}");
                continue;
            }
            var fields = new Dictionary<string, string>(StringComparer.Ordinal);
            for (var i = 0; i < header.Length; i++) fields[header[i]] = cells[i];
            yield return (line, fields, raw, null);
        }
    }

    /// <summary>RFC 4180 records: quoted fields may hold commas, doubled quotes and line breaks.</summary>
    private static IEnumerable<(int Line, List<string> Cells, string Raw)> CsvRecords(TextReader reader)
    {
        var lineNo = 0;
        while (reader.ReadLine() is { } first)
        {
            lineNo++;
            var start = lineNo;
            var raw = new StringBuilder(first);
            var cells = new List<string>();
            var cell = new StringBuilder();
            var quoted = false;
            var text = first;
            var i = 0;
            while (true)
            {
                if (i >= text.Length)
                {
                    if (quoted && reader.ReadLine() is { } next)
                    {
                        lineNo++;
                        raw.Append('\n').Append(next);
                        cell.Append('\n');
                        text = next;
                        i = 0;
                        continue;
                    }
                    break;
                }
                var ch = text[i++];
                if (quoted)
                {
                    if (ch == '"' && i < text.Length && text[i] == '"') { cell.Append('"'); i++; }
                    else if (ch == '"') quoted = false;
                    else cell.Append(ch);
                }
                else if (ch == '"') quoted = true;
                else if (ch == ',') { cells.Add(cell.ToString()); cell.Clear(); }
                else cell.Append(ch);
            }
            cells.Add(cell.ToString());
            yield return (start, cells, raw.ToString());
        }
    }
}
