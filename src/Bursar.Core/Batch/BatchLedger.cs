using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Bursar.Core.Ledger;
using Bursar.Core.Pricing;
using Bursar.Core.Usage;

namespace Bursar.Core.Batch;

/// <summary>What the provider said about one line of a batch.</summary>
public sealed record BatchLineResult
{
    public required string CustomId { get; init; }
    /// <summary><c>ok</c>, <c>client_error</c>, <c>upstream_error</c>, <c>expired</c>, <c>canceled</c> or <c>failed</c> (the batch never ran).</summary>
    public required string Outcome { get; init; }
    public int StatusCode { get; init; }
    public TokenUsage Usage { get; init; }
    public string? ServedModel { get; init; }
    public string? ErrorType { get; init; }
    public string? ErrorMessage { get; init; }
    public string? FinishReason { get; init; }
    public string? UpstreamRequestId { get; init; }
    /// <summary>The provider's answer for this line as the synchronous call would have returned it (a deferred job's result); null when it had none.</summary>
    public string? Body { get; init; }
}

/// <summary>
/// Turns batch lines into ledger rows: one row per line, whatever its outcome, priced at the batch rate with the batch
/// saving credited (the same tokens at the standard rate minus what they cost), and an id derived from the batch and the
/// line's <c>custom_id</c>, so collecting the results again (a restart, a second read) never writes a second row.
/// </summary>
public static class BatchLedger
{
    /// <summary>The ledger record id of a batch line: the same for the same batch and <c>custom_id</c>, every time.</summary>
    public static string RecordId(string batchId, string customId) =>
        "bl" + Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(batchId + "\n" + customId)))[..30];

    /// <summary>The most a line can cost at the batch rate: its input bound at the dearest input class, its output limit at the dearer output rate.</summary>
    public static decimal WorstCase(ModelPrice? price, long inputTokens, long outputTokens)
    {
        if (price is null) return 0m;
        var r = price.RatesFor(inputTokens, batch: true);
        var input = Math.Max(r.Input, Math.Max(r.CacheWrite5m ?? 0, r.CacheWrite1h ?? 0));
        return (inputTokens * input + outputTokens * Math.Max(r.Output, r.Reasoning ?? 0)) / 1_000_000m;
    }

    /// <param name="requestedModel">The model the line asked for (its result may name a dated id).</param>
    /// <param name="batchRate">False for a deferred job's synchronous fallback: billed at the standard rate, no batch saving.</param>
    public static LedgerRecord Record(BatchState batch, BatchLineResult line, string? requestedModel, PriceCatalog catalog, DateTimeOffset at, string? provider, bool batchRate = true)
    {
        var usage = line.Usage;
        var served = line.ServedModel ?? requestedModel;
        decimal? cost = null;
        decimal batchSaving = 0m, cacheSaving = 0m;
        var priced = false;
        var price = served is null ? null : catalog.Find(served).Price ?? (requestedModel is null ? null : catalog.Find(requestedModel).Price);
        if (price is not null)
        {
            priced = true;
            cost = CostCalculator.Compute(price, usage, batch: batchRate).Total;
            batchSaving = batchRate ? CostCalculator.Compute(price, usage).Total - cost.Value : 0m;
            cacheSaving = CostCalculator.PromptCacheSaving(price, usage, batch: batchRate);
        }
        if (usage.IsEmpty && cost is null)
        {
            cost = 0m; // a line that used no tokens (errored, expired, canceled) cost nothing, priced or not
            priced = true;
        }
        return new LedgerRecord
        {
            Id = RecordId(batch.Id, line.CustomId),
            Timestamp = at,
            KeyId = batch.KeyId, Team = batch.Team, Customer = batch.Customer, Feature = batch.Feature, Task = batch.Task, Template = batch.Template, Route = batch.Route,
            Dialect = batch.Dialect,
            Provider = provider,
            RequestedModel = requestedModel,
            ServedModel = served,
            Batch = batchRate,
            BatchId = batch.Id,
            CustomId = line.CustomId,
            InputTokens = usage.InputTokens,
            CacheReadTokens = usage.CacheReadTokens,
            CacheWrite5mTokens = usage.CacheWrite5mTokens,
            CacheWrite1hTokens = usage.CacheWrite1hTokens,
            OutputTokens = usage.OutputTokens,
            ReasoningTokens = usage.ReasoningTokens,
            Priced = priced,
            Cost = cost,
            CounterfactualCost = cost + batchSaving + cacheSaving,
            SavingBatch = batchSaving,
            SavingPromptCache = cacheSaving,
            LatencyMs = Math.Max(0, (at - batch.CreatedAt).TotalMilliseconds),
            Outcome = line.Outcome,
            StatusCode = line.StatusCode,
            ErrorType = line.ErrorType,
            ErrorMessage = line.ErrorMessage,
            FinishReason = line.FinishReason,
            UpstreamRequestId = line.UpstreamRequestId,
        };
    }
}

/// <summary>A deferred job's one ledger row: its caller's attribution, its id from the job's, whichever way the job ended.</summary>
public static class JobLedger
{
    public static LedgerRecord Record(DeferredJob job, string? batchId, BatchLineResult line, PriceCatalog catalog, DateTimeOffset at, string? provider, bool batchRate)
    {
        var who = new BatchState
        {
            Id = batchId ?? job.Id, Dialect = job.Dialect, Deployment = job.Deployment, Phase = BatchPhase.Running, KeyId = job.KeyId, Team = job.Team,
            Customer = job.Customer, Feature = job.Feature, Task = job.Task, Template = job.Template, Route = job.Route, Lines = 1, WorstUsd = job.WorstUsd, Manifest = "",
            CreatedAt = job.CreatedAt,
        };
        return BatchLedger.Record(who, line, job.Model, catalog, at, provider, batchRate) with
        {
            Id = job.RecordId, BatchId = batchId, CustomId = job.Id, RequestedModel = job.RequestedModel ?? job.Model,
        };
    }
}

/// <summary>One line of a batch as Bursar keeps it: its <c>custom_id</c>, the model it asks for and its worst case at the batch rate.</summary>
public readonly record struct ManifestLine(string CustomId, string Model, decimal WorstUsd);

/// <summary>The lines of a batch, one JSON object per line on disk (<c>{"c":…,"m":…,"w":"…"}</c>): written at submit, read when results arrive.</summary>
public static class BatchManifest
{
    public static async Task WriteAsync(string path, IEnumerable<ManifestLine> lines, CancellationToken cancellationToken)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        var tmp = path + ".tmp";
        await using (var file = new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.None, 64 * 1024, useAsync: true))
        {
            var buffer = new System.Buffers.ArrayBufferWriter<byte>(4096);
            foreach (var l in lines)
            {
                buffer.ResetWrittenCount();
                using (var w = new Utf8JsonWriter(buffer))
                {
                    w.WriteStartObject();
                    w.WriteString("c", l.CustomId);
                    w.WriteString("m", l.Model);
                    w.WriteString("w", l.WorstUsd.ToString(CultureInfo.InvariantCulture));
                    w.WriteEndObject();
                }
                await file.WriteAsync(buffer.WrittenMemory, cancellationToken).ConfigureAwait(false);
                file.WriteByte((byte)'\n');
            }
            await file.FlushAsync(cancellationToken).ConfigureAwait(false);
            file.Flush(flushToDisk: true);
        }
        File.Move(tmp, path, overwrite: true);
    }

    public static async IAsyncEnumerable<ManifestLine> ReadAsync(string path, [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken)
    {
        using var reader = new StreamReader(path, Encoding.UTF8);
        while (await reader.ReadLineAsync(cancellationToken).ConfigureAwait(false) is { } text)
        {
            if (text.Length == 0) continue;
            using var doc = JsonDocument.Parse(text);
            var r = doc.RootElement;
            yield return new ManifestLine(r.GetProperty("c").GetString()!, r.GetProperty("m").GetString()!, decimal.Parse(r.GetProperty("w").GetString()!, NumberStyles.Float, CultureInfo.InvariantCulture));
        }
    }
}
