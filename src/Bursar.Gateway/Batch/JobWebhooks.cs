using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Bursar.Core.Batch;
using Bursar.Hosting;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Bursar.Gateway.Batch;

/// <summary>
/// The optional signed webhook per key (<see cref="WebhookOptions"/>): when a deferred job of a key with a webhook ends, a
/// delivery is written to <c>{DataDirectory}/webhooks</c> before the job is marked ended, and the dispatcher POSTs the job's
/// status to the key's URL, signed (<see cref="WebhookOptions.SignatureHeader"/>), retrying with exponential backoff. A
/// delivery leaves the folder only once the receiver answered 2xx (or it was given up, to <c>webhooks/failed</c>), so a
/// crash or restart loses none; delivery is at least once, so receivers dedupe by the job id (<c>x-bursar-webhook-id</c>).
/// </summary>
public sealed partial class JobWebhooks(IJobStore jobs, WebhookOptions options, BursarOptions bursar, TimeProvider time, ILogger<JobWebhooks> logger) : BackgroundService
{
    private readonly string _dir = Path.Combine(bursar.DataDirectory, "webhooks");
    private readonly HttpClient _http = new() { Timeout = options.Timeout };
    private readonly SemaphoreSlim _dispatching = new(1, 1);

    /// <summary>Whether the key has a webhook.</summary>
    public bool Wants(string keyId) => options.Keys.ContainsKey(keyId);

    /// <summary>
    /// Records that the job's key is to hear of its end. Called before the job is marked ended: a crash between the two leaves a
    /// delivery the dispatcher holds back until the job has ended (the next collection ends it).
    /// </summary>
    public async Task RecordAsync(DeferredJob job, CancellationToken ct)
    {
        if (!Wants(job.KeyId)) return;
        var path = Path.Combine(_dir, job.Id + ".json");
        if (File.Exists(path)) return;
        Directory.CreateDirectory(_dir);
        await SaveAsync(path, new Delivery(job.Id, 0, time.GetUtcNow(), null), ct).ConfigureAwait(false);
    }

    private sealed record Delivery(string JobId, int Attempts, DateTimeOffset NextAt, string? LastError);

    private static async Task SaveAsync(string path, Delivery d, CancellationToken ct)
    {
        var json = new JsonObject { ["job"] = d.JobId, ["attempts"] = d.Attempts, ["next_at"] = d.NextAt.ToUnixTimeMilliseconds(), ["last_error"] = d.LastError }.ToJsonString();
        var tmp = path + ".tmp";
        await File.WriteAllTextAsync(tmp, json, ct).ConfigureAwait(false);
        File.Move(tmp, path, overwrite: true); // whole or not at all
    }

    private static Delivery? Load(string path)
    {
        try
        {
            var o = JsonNode.Parse(File.ReadAllText(path)) as JsonObject;
            return o?["job"]?.GetValue<string>() is { } id
                ? new Delivery(id, o["attempts"]?.GetValue<int>() ?? 0, DateTimeOffset.FromUnixTimeMilliseconds(o["next_at"]?.GetValue<long>() ?? 0), o["last_error"]?.GetValue<string>())
                : null;
        }
        catch (Exception e) when (e is System.Text.Json.JsonException or IOException or InvalidOperationException or FormatException)
        {
            return null;
        }
    }

    /// <summary>The signature of <paramref name="body"/> sent at <paramref name="unixSeconds"/>: <c>t=…,v1=hex(HMAC-SHA256(secret, "t.body"))</c>.</summary>
    public static string Sign(string secret, long unixSeconds, string body)
    {
        var t = unixSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture);
        var mac = HMACSHA256.HashData(Encoding.UTF8.GetBytes(secret), Encoding.UTF8.GetBytes(t + "." + body));
        return $"t={t},v1={Convert.ToHexStringLower(mac)}";
    }

    /// <summary>Sends every delivery that is due; returns how many were delivered.</summary>
    public async Task<int> DispatchOnceAsync(CancellationToken ct)
    {
        if (!Directory.Exists(_dir)) return 0;
        await _dispatching.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            var delivered = 0;
            foreach (var path in Directory.EnumerateFiles(_dir, "*.json").ToList())
            {
                var now = time.GetUtcNow();
                if (Load(path) is not { } d)
                {
                    Move(path, "unreadable");
                    continue;
                }
                if (d.NextAt > now) continue;
                var job = await jobs.FindJobAsync(d.JobId, ct).ConfigureAwait(false);
                if (job is null || !options.Keys.TryGetValue(job.KeyId, out var endpoint))
                {
                    File.Delete(path); // the job is gone, or its key no longer has a webhook
                    continue;
                }
                if (job.State is JobState.Queued or JobState.Submitted) continue; // recorded before a crash: sent once the job has ended
                var body = Payload(job);
                string? error;
                try
                {
                    using var req = new HttpRequestMessage(HttpMethod.Post, endpoint.Url) { Content = new StringContent(body, Encoding.UTF8, "application/json") };
                    req.Headers.TryAddWithoutValidation(WebhookOptions.SignatureHeader, Sign(endpoint.Secret, now.ToUnixTimeSeconds(), body));
                    req.Headers.TryAddWithoutValidation("x-bursar-webhook-id", job.Id);
                    req.Headers.TryAddWithoutValidation("x-bursar-webhook-attempt", (d.Attempts + 1).ToString(System.Globalization.CultureInfo.InvariantCulture));
                    using var resp = await _http.SendAsync(req, ct).ConfigureAwait(false);
                    error = resp.IsSuccessStatusCode ? null : $"the receiver answered {(int)resp.StatusCode}";
                }
                catch (Exception e) when (e is HttpRequestException or TaskCanceledException && !ct.IsCancellationRequested)
                {
                    error = e is TaskCanceledException ? $"no answer within {options.Timeout}" : e.Message;
                }
                if (error is null)
                {
                    File.Delete(path);
                    delivered++;
                    LogDelivered(logger, job.Id, job.KeyId, d.Attempts + 1);
                    continue;
                }
                var attempts = d.Attempts + 1;
                if (attempts >= options.MaxAttempts)
                {
                    await SaveAsync(path, d with { Attempts = attempts, LastError = error }, ct).ConfigureAwait(false);
                    Move(path, "failed");
                    LogGaveUp(logger, job.Id, job.KeyId, attempts, error);
                    continue;
                }
                var wait = TimeSpan.FromTicks(Math.Min(options.MaxRetryDelay.Ticks, options.FirstRetryDelay.Ticks * (1L << Math.Min(attempts - 1, 30))));
                await SaveAsync(path, d with { Attempts = attempts, NextAt = now + wait, LastError = error }, ct).ConfigureAwait(false);
                LogRetry(logger, job.Id, job.KeyId, attempts, error, wait);
            }
            return delivered;
        }
        finally
        {
            _dispatching.Release();
        }
    }

    private void Move(string path, string folder)
    {
        var dir = Path.Combine(_dir, folder);
        Directory.CreateDirectory(dir);
        File.Move(path, Path.Combine(dir, Path.GetFileName(path)), overwrite: true);
    }

    /// <summary>What the receiver gets: the job's end, not its answer (fetch it from <c>location</c> with the key).</summary>
    private static string Payload(DeferredJob job) => new JsonObject
    {
        ["id"] = job.Id, ["object"] = "bursar.job", ["type"] = "job." + job.State.ToString().ToLowerInvariant(),
        ["status"] = job.State.ToString().ToLowerInvariant(), ["status_code"] = job.StatusCode, ["location"] = JobAnswers.Location(job.Id),
        ["model"] = job.Model, ["feature"] = job.Feature, ["created_at"] = job.CreatedAt.ToUnixTimeSeconds(), ["ended_at"] = job.UpdatedAt.ToUnixTimeSeconds(),
        ["error"] = job.Error,
    }.ToJsonString();

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        if (options.Keys.Count == 0) return;
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                await DispatchOnceAsync(stoppingToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                LogDispatchError(logger, e.Message); // the store or the disk failed this tick: the deliveries stay for the next
            }
            try
            {
                await Task.Delay(options.DispatchInterval, time, stoppingToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    public override void Dispose()
    {
        _http.Dispose();
        _dispatching.Dispose();
        base.Dispose();
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Webhook for job {JobId} delivered to key {KeyId}'s receiver (attempt {Attempt})")]
    private static partial void LogDelivered(ILogger logger, string jobId, string keyId, int attempt);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Webhook for job {JobId} (key {KeyId}) failed, attempt {Attempt}: {Reason}; next try in {Wait}")]
    private static partial void LogRetry(ILogger logger, string jobId, string keyId, int attempt, string reason, TimeSpan wait);

    [LoggerMessage(Level = LogLevel.Error, Message = "Webhook for job {JobId} (key {KeyId}) given up after {Attempts} attempts: {Reason}; kept in webhooks/failed")]
    private static partial void LogGaveUp(ILogger logger, string jobId, string keyId, int attempts, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "The webhook dispatcher failed this tick: {Reason}")]
    private static partial void LogDispatchError(ILogger logger, string reason);
}
