using Bursar.Core.Batch;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Bursar.Gateway.Batch;

/// <summary>
/// Works through every batch whose lines are not all on the ledger, every <see cref="BatchOptions.PollInterval"/>: the
/// list is read from the store each time, so a restarted gateway picks up where the last one stopped, and rows are
/// written whether or not the caller ever asks for the results.
/// </summary>
public sealed partial class BatchPoller(IBatchStore store, BatchCollector collector, BatchOptions options, TimeProvider time, ILogger<BatchPoller> logger) : BackgroundService
{
    /// <summary>Polls once now (tests, and the first tick at start).</summary>
    public async Task PollOnceAsync(CancellationToken ct)
    {
        foreach (var b in await store.ListOpenBatchesAsync(ct).ConfigureAwait(false))
        {
            try
            {
                await collector.RefreshAsync(b, ct).ConfigureAwait(false);
            }
            catch (Exception e) when (e is HttpRequestException or TimeoutException or IOException or System.Text.Json.JsonException)
            {
                LogPollError(logger, b.Id, e.Message);
            }
        }
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                await PollOnceAsync(stoppingToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                LogPollError(logger, "*", e.Message); // the store was unreachable: the next tick tries again
            }
            try
            {
                await Task.Delay(options.PollInterval, time, stoppingToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Batch poll of {BatchId} failed: {Reason}; the next poll tries again")]
    private static partial void LogPollError(ILogger logger, string batchId, string reason);
}
