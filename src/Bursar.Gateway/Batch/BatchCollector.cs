using System.Collections.Concurrent;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Bursar.Core.Batch;
using Bursar.Core.Ledger;
using Bursar.Core.Pricing;
using Bursar.Core.Usage;
using Bursar.Providers.Dialects;
using Bursar.Providers.Upstream;
using Microsoft.Extensions.Logging;

namespace Bursar.Gateway.Batch;

/// <summary>
/// Asks the provider about a batch and, once it has ended, writes one ledger row per line (streamed from the provider's
/// result files, never held whole): succeeded lines at the batch rate, errored, expired and canceled ones at $0 with
/// their outcome, and a line the provider gave no result for with its batch's outcome. Row ids come from the batch and
/// the <c>custom_id</c>, so a second collection (a restart midway, a caller's read) writes nothing twice; the batch is
/// marked collected only after its last row is journaled. One collection per batch at a time.
/// </summary>
public sealed partial class BatchCollector(
    IBatchStore store, UpstreamRegistry registry, UpstreamClient upstream, LedgerWriter ledger, PriceCatalog catalog,
    BatchReservations reservations, JobLines jobs, BatchOptions options, TimeProvider time, ILogger<BatchCollector> logger)
{
    private readonly ConcurrentDictionary<string, SemaphoreSlim> _gates = new(StringComparer.Ordinal);
    private static readonly Func<string, string?> NoCallerHeaders = static _ => null;

    /// <summary>Called after a batch's rows are journaled and before it is marked collected (a test's kill point).</summary>
    public Action<string>? RowsWritten { get; set; }

    public UpstreamDeployment? Deployment(BatchState b) => registry.Deployments.FirstOrDefault(d => d.Name.Equals(b.Deployment, StringComparison.OrdinalIgnoreCase));

    public static string BatchPath(UpstreamDeployment d, string rest) => d.Dialect == Dialect.Anthropic ? "v1/messages/batches" + rest : "batches" + rest;

    /// <summary>
    /// Refreshes the batch from its provider (reconciling an interrupted submit) and collects its lines once it has ended;
    /// returns the batch as stored now. Never throws for a provider that is down: the next poll tries again.
    /// </summary>
    public async Task<BatchState> RefreshAsync(BatchState batch, CancellationToken ct)
    {
        using (await LockAsync(batch.Id, ct).ConfigureAwait(false))
        {
            var b = await store.FindBatchAsync(batch.Id, ct).ConfigureAwait(false) ?? batch;
            if (b.Collected) return b;
            var d = Deployment(b);
            if (d is null)
            {
                LogNoDeployment(logger, b.Id, b.Deployment);
                return b;
            }
            if (b.Phase == BatchPhase.Submitting)
            {
                b = await ReconcileAsync(b, d, ct).ConfigureAwait(false);
                if (b.Phase != BatchPhase.Running) return b;
            }
            using var resp = await upstream.SendRawAsync(d, HttpMethod.Get, BatchPath(d, "/" + b.UpstreamId), null, NoCallerHeaders, ct).ConfigureAwait(false);
            if (!resp.IsSuccessStatusCode)
            {
                LogPollFailed(logger, b.Id, d.Name, (int)resp.StatusCode);
                return b;
            }
            var o = JsonNode.Parse(await resp.Content.ReadAsStringAsync(ct).ConfigureAwait(false)) as JsonObject;
            if (o is null) return b;
            b = await SaveObjectAsync(b, o, ct).ConfigureAwait(false);
            if (!BatchObjects.IsEnded(d.Dialect, o)) return b;
            await CollectAsync(b, d, o, ct).ConfigureAwait(false);
            RowsWritten?.Invoke(b.Id);
            b = b with { Phase = BatchPhase.Ended, Collected = true, UpdatedAt = time.GetUtcNow() };
            await store.SaveBatchAsync(b, ct).ConfigureAwait(false);
            reservations.Release(b.Id);
            LogCollected(logger, b.Id, b.Lines);
            return b;
        }
    }

    /// <summary>
    /// Holds the batch for one piece of work: a collection, or a submit in flight (so the poller never takes a submit this process is
    /// still making for one a crash interrupted).
    /// </summary>
    public async Task<IDisposable> LockAsync(string batchId, CancellationToken ct)
    {
        var gate = _gates.GetOrAdd(batchId, static _ => new SemaphoreSlim(1, 1));
        await gate.WaitAsync(ct).ConfigureAwait(false);
        return new Held(gate);
    }

    private sealed class Held(SemaphoreSlim gate) : IDisposable
    {
        private int _done;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _done, 1) == 0) gate.Release();
        }
    }

    /// <summary>Stores the provider's object with Bursar's ids (its result files mapped to this deployment and key).</summary>
    public async Task<BatchState> SaveObjectAsync(BatchState b, JsonObject upstreamObject, CancellationToken ct)
    {
        var files = new List<BatchFileState>();
        var upstreamDialect = Deployment(b)?.Dialect ?? CrossDialectBatches.Caller(b);
        var rewritten = BatchObjects.Rewrite(b, upstreamDialect, upstreamObject, up =>
        {
            var id = BatchObjects.ResultFileId(b.Deployment, up);
            files.Add(new BatchFileState { Id = id, Deployment = b.Deployment, UpstreamId = up, KeyId = b.KeyId, Purpose = "batch_output", CreatedAt = time.GetUtcNow() });
            return id;
        });
        foreach (var f in files)
            if (await store.FindFileAsync(f.Id, ct).ConfigureAwait(false) is null) await store.SaveFileAsync(f, ct).ConfigureAwait(false);
        b = b with { Object = rewritten.ToJsonString(), UpdatedAt = time.GetUtcNow() };
        await store.SaveBatchAsync(b, ct).ConfigureAwait(false);
        return b;
    }

    /// <summary>
    /// A submit Bursar recorded but never heard back about (a crash between the provider's accepting it and Bursar's recording its id):
    /// found in the provider's list by the metadata Bursar attached (OpenAI) or by its time, size and lines (Anthropic, whose batches carry no
    /// metadata: <see cref="FindAnthropicAsync"/>), else abandoned; looked for once <see cref="BatchOptions.ReconcileAfter"/> has passed.
    /// </summary>
    private async Task<BatchState> ReconcileAsync(BatchState b, UpstreamDeployment d, CancellationToken ct)
    {
        if (time.GetUtcNow() - b.CreatedAt < options.ReconcileAfter) return b;
        if (d.Dialect == Dialect.OpenAI)
        {
            string? after = null;
            for (var page = 0; page < 20; page++)
            {
                using var resp = await upstream.SendRawAsync(d, HttpMethod.Get, "batches?limit=100" + (after is null ? "" : "&after=" + Uri.EscapeDataString(after)), null, NoCallerHeaders, ct).ConfigureAwait(false);
                if (!resp.IsSuccessStatusCode) return b;
                var list = JsonNode.Parse(await resp.Content.ReadAsStringAsync(ct).ConfigureAwait(false)) as JsonObject;
                var data = list?["data"] as JsonArray;
                foreach (var item in data ?? [])
                {
                    if (BatchObjects.Str(item?["metadata"], BatchObjects.MetadataKey) != b.Id || BatchObjects.Str(item, "id") is not { } upstreamId) continue;
                    LogReconciled(logger, b.Id, upstreamId);
                    b = b with { UpstreamId = upstreamId, Phase = BatchPhase.Running, UpdatedAt = time.GetUtcNow() };
                    await store.SaveBatchAsync(b, ct).ConfigureAwait(false);
                    return b;
                }
                if (list?["has_more"] is not JsonValue hm || !hm.TryGetValue<bool>(out var more) || !more || data is not { Count: > 0 }) break;
                after = BatchObjects.Str(data[^1], "id");
            }
        }
        else
        {
            switch (await FindAnthropicAsync(b, d, ct).ConfigureAwait(false))
            {
                case { } upstreamId when upstreamId.Length > 0:
                    LogReconciled(logger, b.Id, upstreamId);
                    b = b with { UpstreamId = upstreamId, Phase = BatchPhase.Running, UpdatedAt = time.GetUtcNow() };
                    await store.SaveBatchAsync(b, ct).ConfigureAwait(false);
                    return b;
                case "":
                    return b; // candidates that cannot be told apart yet: the next poll looks again
                case null:
                    break; // the provider holds nothing that can be this batch
            }
        }
        LogAbandoned(logger, b.Id);
        reservations.Release(b.Id);
        if (b.Jobs) await jobs.RequeueAsync(b.Id, ct).ConfigureAwait(false); // the provider never took them: they wait for the next flush
        b = b with { Phase = BatchPhase.Abandoned, Collected = true, Error = "the submit was interrupted and the provider holds no such batch", UpdatedAt = time.GetUtcNow() };
        await store.SaveBatchAsync(b, ct).ConfigureAwait(false);
        return b;
    }

    /// <summary>How far from Bursar's record of a submit the provider's <c>created_at</c> of the same batch may be (clock skew, retries, a slow accept).</summary>
    private static readonly TimeSpan SkewBefore = TimeSpan.FromMinutes(5), SkewAfter = TimeSpan.FromHours(1);

    /// <summary>
    /// Finds an interrupted submit among an Anthropic deployment's message batches, which carry no metadata: a candidate is a
    /// batch created around the submit, with as many requests, that no other Bursar batch holds. An ended candidate is proven
    /// by its results (their <c>custom_id</c>s are exactly the batch's lines); one still running is taken only when it is the
    /// only candidate and no other interrupted submit of this deployment has as many lines. Returns the provider's id, ""
    /// when candidates exist that cannot be told apart yet, null when there is none.
    /// </summary>
    private async Task<string?> FindAnthropicAsync(BatchState b, UpstreamDeployment d, CancellationToken ct)
    {
        var known = await store.ListBatchesAsync(null, null, 100_000, ct).ConfigureAwait(false);
        var claimed = known.Where(x => x.UpstreamId is not null && x.Deployment.Equals(d.Name, StringComparison.OrdinalIgnoreCase)).Select(x => x.UpstreamId!).ToHashSet(StringComparer.Ordinal);
        var rivals = known.Count(x => x.Id != b.Id && x.Phase == BatchPhase.Submitting && x.Lines == b.Lines && x.Deployment.Equals(d.Name, StringComparison.OrdinalIgnoreCase));
        var candidates = new List<(string Id, bool Ended)>();
        string? after = null;
        for (var page = 0; page < 20; page++)
        {
            using var resp = await upstream.SendRawAsync(d, HttpMethod.Get, "v1/messages/batches?limit=100" + (after is null ? "" : "&after_id=" + Uri.EscapeDataString(after)), null, NoCallerHeaders, ct).ConfigureAwait(false);
            if (!resp.IsSuccessStatusCode) return "";
            var list = JsonNode.Parse(await resp.Content.ReadAsStringAsync(ct).ConfigureAwait(false)) as JsonObject;
            var data = list?["data"] as JsonArray;
            foreach (var item in data ?? [])
            {
                if (BatchObjects.Str(item, "id") is not { } id || claimed.Contains(id)) continue;
                if (!DateTimeOffset.TryParse(BatchObjects.Str(item, "created_at"), System.Globalization.CultureInfo.InvariantCulture, System.Globalization.DateTimeStyles.AssumeUniversal, out var created)
                    || created < b.CreatedAt - SkewBefore || created > b.CreatedAt + SkewAfter) continue;
                var total = 0L;
                if (item!["request_counts"] is JsonObject counts)
                    foreach (var (_, v) in counts) total += v is JsonValue jv && jv.TryGetValue<long>(out var n) ? n : 0;
                if (total != b.Lines) continue;
                candidates.Add((id, BatchObjects.Str(item, "processing_status") == "ended"));
            }
            if (list?["has_more"] is not JsonValue hm || !hm.TryGetValue<bool>(out var more) || !more || data is not { Count: > 0 }) break;
            after = BatchObjects.Str(data[^1], "id");
        }
        if (candidates.Count == 0) return null;
        var lines = new HashSet<string>(StringComparer.Ordinal);
        await foreach (var l in BatchManifest.ReadAsync(b.Manifest, ct).ConfigureAwait(false)) lines.Add(l.CustomId);
        foreach (var (id, ended) in candidates)
        {
            if (!ended) continue;
            using var resp = await upstream.SendRawAsync(d, HttpMethod.Get, BatchPath(d, $"/{Uri.EscapeDataString(id)}/results"), null, NoCallerHeaders, ct).ConfigureAwait(false);
            if (!resp.IsSuccessStatusCode) continue;
            await using var stream = await resp.Content.ReadAsStreamAsync(ct).ConfigureAwait(false);
            using var reader = new StreamReader(stream, Encoding.UTF8);
            var seen = 0;
            var match = true;
            while (match && await reader.ReadLineAsync(ct).ConfigureAwait(false) is { } text)
            {
                if (string.IsNullOrWhiteSpace(text)) continue;
                match = Parse("anthropic", text) is { } line && lines.Contains(line.CustomId);
                seen++;
            }
            if (match && seen == lines.Count) return id;
        }
        if (candidates.All(c => c.Ended)) return null; // every candidate has ended with other lines than this batch's
        return candidates.Count == 1 && rivals == 0 ? candidates[0].Id : "";
    }

    private async Task CollectAsync(BatchState b, UpstreamDeployment d, JsonObject o, CancellationToken ct)
    {
        var manifest = new Dictionary<string, ManifestLine>(StringComparer.Ordinal);
        await foreach (var l in BatchManifest.ReadAsync(b.Manifest, ct).ConfigureAwait(false)) manifest[l.CustomId] = l;
        var seen = new HashSet<string>(StringComparer.Ordinal);
        async Task Lines(string path)
        {
            using var resp = await upstream.SendRawAsync(d, HttpMethod.Get, path, null, NoCallerHeaders, ct).ConfigureAwait(false);
            if (!resp.IsSuccessStatusCode) throw new HttpRequestException($"The provider answered {(int)resp.StatusCode} for {path}.");
            await using var stream = await resp.Content.ReadAsStreamAsync(ct).ConfigureAwait(false);
            using var reader = new StreamReader(stream, Encoding.UTF8);
            while (await reader.ReadLineAsync(ct).ConfigureAwait(false) is { } text)
            {
                if (string.IsNullOrWhiteSpace(text)) continue;
                if (Parse(d.Dialect.Name(), text) is not { } line || !manifest.TryGetValue(line.CustomId, out var m) || !seen.Add(line.CustomId)) continue;
                await WriteAsync(b, d, line, m.Model, ct).ConfigureAwait(false);
            }
        }
        // the results are read in the deployment's dialect (a cross-dialect batch's caller reads them translated)
        if (d.Dialect == Dialect.Anthropic)
        {
            await Lines(BatchPath(d, $"/{b.UpstreamId}/results")).ConfigureAwait(false);
        }
        else
        {
            foreach (var field in new[] { "output_file_id", "error_file_id" })
                if (BatchObjects.Str(o, field) is { } file) await Lines($"files/{Uri.EscapeDataString(file)}/content").ConfigureAwait(false);
        }
        // lines the provider gave no result for end with their batch
        var status = BatchObjects.Str(o, d.Dialect == Dialect.Anthropic ? "processing_status" : "status");
        var (outcome, message) = status switch
        {
            "expired" => ("expired", "The batch expired before this request ran."),
            "cancelled" => ("canceled", "The batch was cancelled before this request ran."),
            "failed" => ("failed", "The provider failed the batch at validation: " + (o["errors"]?["data"]?.ToJsonString() ?? "no reason given")),
            _ => ("upstream_error", "The provider's results hold no line for this request."),
        };
        foreach (var (customId, m) in manifest)
            if (!seen.Contains(customId))
                await WriteAsync(b, d, new BatchLineResult { CustomId = customId, Outcome = outcome, ErrorType = outcome == "upstream_error" ? "missing_result" : "batch_" + outcome, ErrorMessage = message }, m.Model, ct).ConfigureAwait(false);
    }

    private async Task WriteAsync(BatchState b, UpstreamDeployment d, BatchLineResult line, string model, CancellationToken ct)
    {
        if (b.Jobs)
        {
            await jobs.CompleteAsync(b, d, line, ct).ConfigureAwait(false);
            return;
        }
        var record = BatchLedger.Record(b, line, model, catalog, time.GetUtcNow(), d.ProviderName);
        await ledger.AppendAsync(record).ConfigureAwait(false);
        reservations.Settle(b, line.CustomId, record.ServedModel ?? model, record.Cost ?? 0m);
    }

    /// <summary>One result line of either provider (null for a line that is not one).</summary>
    public static BatchLineResult? Parse(string dialect, string text)
    {
        try
        {
            using var doc = JsonDocument.Parse(text);
            var r = doc.RootElement;
            if (r.ValueKind != JsonValueKind.Object || !r.TryGetProperty("custom_id", out var cid) || cid.ValueKind != JsonValueKind.String) return null;
            var customId = cid.GetString()!;
            return dialect == "anthropic" ? ParseAnthropic(customId, r) : ParseOpenAI(customId, r);
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException)
        {
            return null;
        }
    }

    private static BatchLineResult ParseOpenAI(string customId, JsonElement r)
    {
        if (r.TryGetProperty("response", out var resp) && resp.ValueKind == JsonValueKind.Object)
        {
            var status = resp.TryGetProperty("status_code", out var sc) && sc.TryGetInt32(out var s) ? s : 0;
            var body = resp.TryGetProperty("body", out var b) ? b : default;
            if (status == 200 && body.ValueKind == JsonValueKind.Object)
            {
                var usage = body.TryGetProperty("usage", out var u) && u.ValueKind == JsonValueKind.Object ? UsageReader.ReadOpenAI(u) : default;
                string? finish = null;
                if (body.TryGetProperty("choices", out var choices) && choices.ValueKind == JsonValueKind.Array && choices.GetArrayLength() > 0 && choices[0].TryGetProperty("finish_reason", out var fr) && fr.ValueKind == JsonValueKind.String)
                    finish = fr.GetString();
                return new BatchLineResult
                {
                    CustomId = customId, Outcome = "ok", StatusCode = 200, Usage = usage, ServedModel = Str(body, "model"), FinishReason = finish,
                    UpstreamRequestId = Str(body, "id") ?? Str(resp, "request_id"), Body = body.GetRawText(),
                };
            }
            var error = body.ValueKind == JsonValueKind.Object && body.TryGetProperty("error", out var e) && e.ValueKind == JsonValueKind.Object ? e : default;
            return new BatchLineResult
            {
                CustomId = customId, Outcome = status >= 500 ? "upstream_error" : "client_error", StatusCode = status,
                ErrorType = error.ValueKind == JsonValueKind.Object ? Str(error, "code") ?? Str(error, "type") : null,
                ErrorMessage = error.ValueKind == JsonValueKind.Object ? Str(error, "message") : null, UpstreamRequestId = Str(resp, "request_id"),
                Body = body.ValueKind == JsonValueKind.Undefined ? null : body.GetRawText(),
            };
        }
        var err = r.TryGetProperty("error", out var ee) && ee.ValueKind == JsonValueKind.Object ? ee : default;
        var code = err.ValueKind == JsonValueKind.Object ? Str(err, "code") : null;
        return new BatchLineResult
        {
            CustomId = customId, Outcome = code switch { "batch_expired" => "expired", "batch_cancelled" => "canceled", _ => "upstream_error" },
            ErrorType = code, ErrorMessage = err.ValueKind == JsonValueKind.Object ? Str(err, "message") : null,
        };
    }

    private static BatchLineResult ParseAnthropic(string customId, JsonElement r)
    {
        var result = r.TryGetProperty("result", out var res) && res.ValueKind == JsonValueKind.Object ? res : default;
        var type = result.ValueKind == JsonValueKind.Object ? Str(result, "type") : null;
        switch (type)
        {
            case "succeeded" when result.TryGetProperty("message", out var m) && m.ValueKind == JsonValueKind.Object:
                var usage = m.TryGetProperty("usage", out var u) && u.ValueKind == JsonValueKind.Object ? UsageReader.ReadAnthropic(u) : default;
                return new BatchLineResult
                {
                    CustomId = customId, Outcome = "ok", StatusCode = 200, Usage = usage, ServedModel = Str(m, "model"),
                    FinishReason = Str(m, "stop_reason"), UpstreamRequestId = Str(m, "id"), Body = m.GetRawText(),
                };
            case "errored":
                var inner = result.TryGetProperty("error", out var e) && e.ValueKind == JsonValueKind.Object && e.TryGetProperty("error", out var ie) && ie.ValueKind == JsonValueKind.Object ? ie : default;
                var errorType = inner.ValueKind == JsonValueKind.Object ? Str(inner, "type") : null;
                return new BatchLineResult
                {
                    CustomId = customId, Outcome = errorType is "invalid_request_error" or "not_found_error" or "permission_error" or "authentication_error" ? "client_error" : "upstream_error",
                    StatusCode = errorType == "invalid_request_error" ? 400 : 500, ErrorType = errorType,
                    ErrorMessage = inner.ValueKind == JsonValueKind.Object ? Str(inner, "message") : null,
                    Body = result.TryGetProperty("error", out var whole) ? whole.GetRawText() : null,
                };
            case "canceled":
                return new BatchLineResult { CustomId = customId, Outcome = "canceled", ErrorType = "batch_canceled", ErrorMessage = "The batch was canceled before this request ran." };
            case "expired":
                return new BatchLineResult { CustomId = customId, Outcome = "expired", ErrorType = "batch_expired", ErrorMessage = "The request expired before it ran (24 hours)." };
            default:
                return new BatchLineResult { CustomId = customId, Outcome = "upstream_error", ErrorType = "unreadable_result", ErrorMessage = $"The provider's result type '{type}' is not one Bursar reads." };
        }
    }

    private static string? Str(JsonElement e, string name) =>
        e.ValueKind == JsonValueKind.Object && e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    [LoggerMessage(Level = LogLevel.Warning, Message = "Batch {BatchId}: its deployment '{Deployment}' is no longer configured; its results cannot be collected")]
    private static partial void LogNoDeployment(ILogger logger, string batchId, string deployment);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Batch {BatchId}: deployment {Deployment} answered {Status} to a poll; trying again later")]
    private static partial void LogPollFailed(ILogger logger, string batchId, string deployment, int status);

    [LoggerMessage(Level = LogLevel.Information, Message = "Batch {BatchId}: every one of its {Lines} lines is on the ledger")]
    private static partial void LogCollected(ILogger logger, string batchId, int lines);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Batch {BatchId}: an interrupted submit was found at the provider as {UpstreamId}")]
    private static partial void LogReconciled(ILogger logger, string batchId, string upstreamId);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Batch {BatchId}: an interrupted submit the provider does not hold; abandoned, nothing billed")]
    private static partial void LogAbandoned(ILogger logger, string batchId);
}
