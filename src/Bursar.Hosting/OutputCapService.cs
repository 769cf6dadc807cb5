using Bursar.Core.Ledger;
using Bursar.Core.Routing;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Bursar.Hosting;

/// <summary>Recomputes learned output caps from the last 7 days of the ledger every <see cref="Interval"/> (only when a route learns its cap).</summary>
public sealed partial class OutputCapService(OutputCapLearner learner, RouteTable routes, ILedgerStore ledger, TimeProvider time, ILogger<OutputCapService> logger) : BackgroundService
{
    public static readonly TimeSpan Interval = TimeSpan.FromMinutes(5);
    public const int MaxRows = 200_000;

    public async Task RecomputeAsync(CancellationToken ct)
    {
        var now = time.GetUtcNow();
        var learning = routes.Current.Routes.Where(r => r.LearnMaxTokens).Select(r => r.Name).ToArray();
        if (learning.Length == 0) return;
        var rows = await ledger.ReadAsync(new LedgerQuery { From = now.AddDays(-7), To = now.AddMinutes(1), Limit = MaxRows, Newest = true, Routes = learning }, ct).ConfigureAwait(false);
        foreach (var cap in learner.Recompute(rows)) LogCap(logger, cap.Route, cap.Cap, cap.Why);
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(Interval, time);
        do
        {
            // routes can arrive later through the admin API: check each tick
            try { await RecomputeAsync(stoppingToken).ConfigureAwait(false); }
            catch (Exception e) when (e is not OperationCanceledException) { LogFailed(logger, e.Message); }
        }
        while (await timer.WaitForNextTickAsync(stoppingToken).ConfigureAwait(false));
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Output cap for route {Route} is now {Cap} tokens: {Why}")]
    private static partial void LogCap(ILogger logger, string route, int cap, string why);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Learning output caps failed (caps unchanged): {Reason}")]
    private static partial void LogFailed(ILogger logger, string reason);
}
