using System.Text;
using Bursar.Core.Batch;
using Bursar.Core.Budgets;
using Bursar.Core.Ledger;
using Bursar.Core.Metering;
using Bursar.Core.Pricing;
using Bursar.Providers.Dialects;
using Bursar.Providers.Upstream;
using Microsoft.Extensions.Logging;

namespace Bursar.Gateway.Batch;

/// <summary>
/// How a deferred job ends, with its one ledger row (<see cref="DeferredJob.RecordId"/>) and the answer its caller will
/// read: its batch line's answer (at the batch rate), or, when its batch was refused or the line expired or was
/// canceled, a synchronous call while the job's delay allows (at the standard rate), or a failure with its reason.
/// </summary>
public sealed partial class JobLines(IJobStore jobs, UpstreamClient upstream, LedgerWriter ledger, PriceCatalog catalog, BudgetManager budgets, JobWebhooks webhooks, TimeProvider time, ILogger<JobLines> logger)
{
    private static readonly Func<string, string?> NoCallerHeaders = static _ => null;

    public Task RequeueAsync(string batchId, CancellationToken ct) => jobs.RequeueAsync(batchId, time.GetUtcNow(), ct);

    /// <summary>A line of a job batch: its answer ends the job; a line without one (expired, canceled, failed batch) falls back.</summary>
    public async Task CompleteAsync(BatchState batch, UpstreamDeployment d, BatchLineResult line, CancellationToken ct)
    {
        if (await jobs.FindJobAsync(line.CustomId, ct).ConfigureAwait(false) is not { State: JobState.Queued or JobState.Submitted } job) return;
        if (line.Body is null)
        {
            await FallbackAsync(job, d, $"its batch line ended {line.Outcome}" + (line.ErrorMessage is null ? "" : $": {line.ErrorMessage}"), ct).ConfigureAwait(false);
            return;
        }
        await FinishAsync(job, d, batch.Id, line, batchRate: true, ct).ConfigureAwait(false);
    }

    /// <summary>Runs the job now, synchronously, if its delay still allows; otherwise fails it with <paramref name="reason"/>.</summary>
    public async Task FallbackAsync(DeferredJob job, UpstreamDeployment d, string reason, CancellationToken ct)
    {
        var dialect = job.Dialect == "anthropic" ? Dialect.Anthropic : Dialect.OpenAI;
        if (time.GetUtcNow() >= job.Deadline)
        {
            var error = new ProviderError(504, $"Deferred job {job.Id} could not be completed within its delay (deadline {job.Deadline:yyyy-MM-dd'T'HH:mm:ss'Z'}): {reason}.", ErrorSource.Upstream);
            var failed = new BatchLineResult { CustomId = job.Id, Outcome = "expired", StatusCode = 504, ErrorType = "deferral_expired", ErrorMessage = error.Message };
            await ledger.AppendAsync(Row(job, d, null, failed, batchRate: false)).ConfigureAwait(false);
            await webhooks.RecordAsync(job, ct).ConfigureAwait(false); // before the job ends: a crash between them still announces it
            await jobs.FinishAsync(job.Id, JobState.Failed, 504, error.ToJson(dialect), error.Message, time.GetUtcNow(), ct).ConfigureAwait(false);
            LogJobFailed(logger, job.Id, reason);
            return;
        }
        LogFallback(logger, job.Id, reason);
        int status;
        byte[] body;
        try
        {
            using var resp = await upstream.SendAsync(d, d.Dialect == Dialect.Anthropic ? "v1/messages" : "chat/completions", job.Body, NoCallerHeaders, ct).ConfigureAwait(false);
            status = (int)resp.Message.StatusCode;
            body = await resp.Message.Content.ReadAsByteArrayAsync(ct).ConfigureAwait(false);
        }
        catch (Exception e) when (e is HttpRequestException or TimeoutException)
        {
            LogFallbackUnreachable(logger, job.Id, e.Message);
            return; // still queued or submitted: the next poll tries again while the delay allows
        }
        var summary = new CallSummary();
        var read = status == 200 && UsageReader.TryReadResponse(dialect, body, summary);
        var line = new BatchLineResult
        {
            CustomId = job.Id, Outcome = status == 200 ? (read ? "ok" : "upstream_error") : status >= 500 || status == 429 ? "upstream_error" : "client_error",
            StatusCode = status, Usage = summary.Usage, ServedModel = summary.Model, FinishReason = summary.FinishReason, UpstreamRequestId = summary.ResponseId,
            ErrorMessage = $"synchronous fallback: {reason}", Body = Encoding.UTF8.GetString(body),
        };
        await FinishAsync(job, d, null, line, batchRate: false, ct).ConfigureAwait(false);
    }

    private async Task FinishAsync(DeferredJob job, UpstreamDeployment d, string? batchId, BatchLineResult line, bool batchRate, CancellationToken ct)
    {
        var record = Row(job, d, batchId, line, batchRate);
        // the row first: a crash before the job is marked done replays the same row id, never a second row
        await ledger.AppendAsync(record).ConfigureAwait(false);
        await webhooks.RecordAsync(job, ct).ConfigureAwait(false); // before the job ends: a crash between them still announces it
        if (await jobs.FinishAsync(job.Id, JobState.Done, line.StatusCode, Encoding.UTF8.GetBytes(line.Body!), null, time.GetUtcNow(), ct).ConfigureAwait(false))
            budgets.Charge(new BudgetSubject(job.KeyId, job.Team, job.Customer, job.Feature, catalog.Find(record.ServedModel ?? job.Model).Price?.Model ?? job.Model), record.Cost ?? 0m);
    }

    private LedgerRecord Row(DeferredJob job, UpstreamDeployment d, string? batchId, BatchLineResult line, bool batchRate) =>
        JobLedger.Record(job, batchId, line, catalog, time.GetUtcNow(), d.ProviderName, batchRate);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Deferred job {JobId} runs synchronously: {Reason}")]
    private static partial void LogFallback(ILogger logger, string jobId, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Deferred job {JobId}: the synchronous fallback could not reach the provider ({Reason}); trying again at the next poll")]
    private static partial void LogFallbackUnreachable(ILogger logger, string jobId, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Deferred job {JobId} failed: {Reason}, and its delay has run out")]
    private static partial void LogJobFailed(ILogger logger, string jobId, string reason);
}
