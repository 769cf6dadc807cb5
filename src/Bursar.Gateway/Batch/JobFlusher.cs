using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Bursar.Core.Batch;
using Bursar.Hosting;
using Bursar.Providers.Dialects;
using Bursar.Providers.Upstream;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Bursar.Gateway.Batch;

/// <summary>
/// Sends queued jobs as provider batches, one per deployment and model, as soon as a queue holds
/// <see cref="DeferralOptions.MaxBatchSize"/> jobs or its oldest has waited <see cref="DeferralOptions.MaxWait"/>. The batch
/// and its jobs' assignment are recorded before the provider hears of it (a crash is reconciled by the poller, or the
/// jobs are queued again); a batch the provider refuses sends its jobs synchronously while their delays allow. The
/// batch's results are collected by the poller like any batch's (<see cref="BatchCollector"/>, <see cref="JobLines"/>).
/// </summary>
public sealed partial class JobFlusher(
    IJobStore jobs, IBatchStore batches, BatchCollector collector, JobLines lines, UpstreamRegistry registry, UpstreamClient upstream,
    DeferralOptions options, BursarOptions bursar, TimeProvider time, ILogger<JobFlusher> logger) : BackgroundService
{
    private static readonly Func<string, string?> NoCallerHeaders = static _ => null;
    private readonly string _spool = Path.Combine(bursar.DataDirectory, "batches");

    /// <summary>The key id job batches are recorded under (no caller's key owns a batch of many callers' jobs).</summary>
    public const string OwnerKey = "bursar-deferral";

    /// <summary>Flushes what is due now; <paramref name="force"/> flushes every queue whatever its size and age. Returns the batches sent.</summary>
    public async Task<int> FlushOnceAsync(bool force, CancellationToken ct)
    {
        var sent = 0;
        var now = time.GetUtcNow();
        foreach (var g in await jobs.QueuedGroupsAsync(ct).ConfigureAwait(false))
        {
            // a job whose deadline comes before MaxWait would end goes now, so its batch has as much of its delay as it can
            var due = force || g.Count >= options.MaxBatchSize || now - g.Oldest >= options.MaxWait || g.NearestDeadline - now <= options.MaxWait;
            if (!due) continue;
            while (true)
            {
                var take = await jobs.QueuedAsync(g.Deployment, g.Model, options.MaxBatchSize, ct).ConfigureAwait(false);
                if (take.Count == 0) break;
                await SubmitAsync(g.Deployment, g.Model, take, ct).ConfigureAwait(false);
                sent++;
                if (take.Count < options.MaxBatchSize) break;
            }
        }
        await SweepAsync(ct).ConfigureAwait(false);
        return sent;
    }

    /// <summary>Jobs whose batch is collected but that did not end (their fallback could not reach the provider): tried again.</summary>
    private async Task SweepAsync(CancellationToken ct)
    {
        foreach (var job in await jobs.ListJobsAsync(JobState.Submitted, 1000, ct).ConfigureAwait(false))
        {
            if (job.BatchId is null || await batches.FindBatchAsync(job.BatchId, ct).ConfigureAwait(false) is not { Collected: true, Phase: BatchPhase.Ended }) continue;
            if (Deployment(job.Deployment) is { } d) await lines.FallbackAsync(job, d, "its batch ended without an answer for it", ct).ConfigureAwait(false);
        }
    }

    private UpstreamDeployment? Deployment(string name) => registry.Deployments.FirstOrDefault(x => x.Name.Equals(name, StringComparison.OrdinalIgnoreCase));

    private async Task SubmitAsync(string deploymentName, string model, IReadOnlyList<DeferredJob> take, CancellationToken ct)
    {
        var now = time.GetUtcNow();
        if (Deployment(deploymentName) is not { } d)
        {
            foreach (var j in take) await jobs.FinishAsync(j.Id, JobState.Failed, 503, null, $"the deployment '{deploymentName}' is no longer configured", now, ct).ConfigureAwait(false);
            return;
        }
        Directory.CreateDirectory(_spool);
        var dialect = d.Dialect.Name();
        var state = new BatchState
        {
            Id = BatchObjects.NewBatchId(dialect, now), Dialect = dialect, Deployment = d.Name, Phase = BatchPhase.Submitting, KeyId = OwnerKey, Model = model,
            Lines = take.Count, WorstUsd = take.Sum(j => j.WorstUsd), Manifest = "", CreatedAt = now, UpdatedAt = now, Jobs = true,
        };
        state = state with { Manifest = Path.Combine(_spool, state.Id + ".manifest") };
        await BatchManifest.WriteAsync(state.Manifest, take.Select(j => new ManifestLine(j.Id, j.Model, j.WorstUsd)), ct).ConfigureAwait(false);
        using (await collector.LockAsync(state.Id, ct).ConfigureAwait(false))
        {
            await batches.SaveBatchAsync(state, ct).ConfigureAwait(false);
            await jobs.AssignAsync(take.Select(j => j.Id).ToArray(), state.Id, now, ct).ConfigureAwait(false);
            (int Status, string Text) answer;
            try
            {
                answer = d.Dialect == Dialect.Anthropic ? await SendAnthropicAsync(d, take, ct).ConfigureAwait(false) : await SendOpenAIAsync(d, state, take, ct).ConfigureAwait(false);
            }
            catch (Exception e) when (e is HttpRequestException or TimeoutException)
            {
                LogUncertain(logger, state.Id, e.Message); // the poller reconciles it, or queues its jobs again
                return;
            }
            {
                var (status, text) = answer;
                if (status is < 200 or > 299 || Parse(text) is not { } o || BatchObjects.Str(o, "id") is not { } upstreamId)
                {
                    var reason = $"the provider refused its batch ({status}: {(text.Length > 300 ? text[..300] : text)})";
                    LogRefused(logger, state.Id, reason);
                    await batches.SaveBatchAsync(state with { Phase = BatchPhase.Abandoned, Collected = true, Error = reason, UpdatedAt = time.GetUtcNow() }, ct).ConfigureAwait(false);
                    foreach (var j in take) await lines.FallbackAsync(j, d, reason, ct).ConfigureAwait(false);
                    return;
                }
                state = state with { UpstreamId = upstreamId, Phase = BatchPhase.Running };
                await collector.SaveObjectAsync(state, o, ct).ConfigureAwait(false);
                LogFlushed(logger, state.Id, take.Count, d.Name, model, upstreamId);
            }
        }
    }

    private static JsonObject? Parse(string text)
    {
        try
        {
            return JsonNode.Parse(text) as JsonObject;
        }
        catch (JsonException)
        {
            return null;
        }
    }

    private static async Task<(int Status, string Text)> ReadAsync(HttpResponseMessage r, CancellationToken ct)
    {
        using (r) return ((int)r.StatusCode, await r.Content.ReadAsStringAsync(ct).ConfigureAwait(false));
    }

    private async Task<(int Status, string Text)> SendOpenAIAsync(UpstreamDeployment d, BatchState state, IReadOnlyList<DeferredJob> take, CancellationToken ct)
    {
        var input = Path.Combine(_spool, state.Id + ".jobs.jsonl");
        await using (var file = new FileStream(input, FileMode.Create, FileAccess.Write, FileShare.None, 64 * 1024, useAsync: true))
        {
            foreach (var j in take)
            {
                var buffer = new System.Buffers.ArrayBufferWriter<byte>(j.Body.Length + 128);
                using (var w = new Utf8JsonWriter(buffer))
                {
                    w.WriteStartObject();
                    w.WriteString("custom_id", j.Id);
                    w.WriteString("method", "POST");
                    w.WriteString("url", BatchInput.ChatEndpoint);
                    w.WritePropertyName("body");
                    w.WriteRawValue(j.Body, skipInputValidation: true);
                    w.WriteEndObject();
                }
                await file.WriteAsync(buffer.WrittenMemory, ct).ConfigureAwait(false);
                file.WriteByte((byte)'\n');
            }
        }
        HttpContent Upload()
        {
            var form = new MultipartFormDataContent();
            form.Add(new StringContent("batch"), "purpose");
            form.Add(new StreamContent(new FileStream(input, FileMode.Open, FileAccess.Read, FileShare.Read, 64 * 1024, useAsync: true)), "file", state.Id + ".jsonl");
            return form;
        }
        var (status, text) = await ReadAsync(await upstream.SendRawAsync(d, HttpMethod.Post, "files", Upload, NoCallerHeaders, ct).ConfigureAwait(false), ct).ConfigureAwait(false);
        if (status is < 200 or > 299 || Parse(text) is not { } uploaded) return (status, text);
        {
            var body = new JsonObject
            {
                ["input_file_id"] = BatchObjects.Str(uploaded, "id"), ["endpoint"] = BatchInput.ChatEndpoint, ["completion_window"] = "24h",
                ["metadata"] = new JsonObject { [BatchObjects.MetadataKey] = state.Id },
            };
            var bytes = Encoding.UTF8.GetBytes(body.ToJsonString());
            return await ReadAsync(await upstream.SendRawAsync(d, HttpMethod.Post, "batches", () => Json(bytes), NoCallerHeaders, ct).ConfigureAwait(false), ct).ConfigureAwait(false);
        }
    }

    private async Task<(int Status, string Text)> SendAnthropicAsync(UpstreamDeployment d, IReadOnlyList<DeferredJob> take, CancellationToken ct)
    {
        var buffer = new System.Buffers.ArrayBufferWriter<byte>(take.Sum(j => j.Body.Length + 64) + 32);
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            w.WriteStartArray("requests");
            foreach (var j in take)
            {
                w.WriteStartObject();
                w.WriteString("custom_id", j.Id);
                w.WritePropertyName("params");
                w.WriteRawValue(j.Body, skipInputValidation: true);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        }
        var bytes = buffer.WrittenMemory;
        return await ReadAsync(await upstream.SendRawAsync(d, HttpMethod.Post, "v1/messages/batches", () => Json(bytes), NoCallerHeaders, ct).ConfigureAwait(false), ct).ConfigureAwait(false);
    }

    private static ReadOnlyMemoryContent Json(ReadOnlyMemory<byte> bytes) =>
        new(bytes) { Headers = { ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/json") } };

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                await FlushOnceAsync(force: false, stoppingToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                LogFlushError(logger, e.Message); // the store or a provider was unreachable: the jobs stay queued for the next tick
            }
            try
            {
                await Task.Delay(options.FlushInterval, time, stoppingToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Flushed batch {BatchId}: {Jobs} deferred jobs to {Deployment} ({Model}) as {UpstreamId}")]
    private static partial void LogFlushed(ILogger logger, string batchId, int jobs, string deployment, string model, string upstreamId);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Batch {BatchId} of deferred jobs: {Reason}; its jobs run synchronously while their delays allow")]
    private static partial void LogRefused(ILogger logger, string batchId, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Batch {BatchId} of deferred jobs: the provider could not be reached ({Reason}); the poller reconciles it")]
    private static partial void LogUncertain(ILogger logger, string batchId, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "The deferral flusher failed this tick: {Reason}")]
    private static partial void LogFlushError(ILogger logger, string reason);
}
