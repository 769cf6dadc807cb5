using Bursar.Core.Admission;
using Bursar.Core.Metering;
using Bursar.Core.Pipeline;
using Bursar.Hosting;

namespace Bursar.Extensions.AI;

/// <summary>
/// The library's lever pipeline (the stages <c>AddBursar</c> registered, then the inner chat client as the provider
/// call) and the start of what a host would start: the ledger's journal replay and writer, budgets, limits and routes.
/// Under a generic host the hosted services start them; in a plain service provider the first call does.
/// </summary>
public sealed class BursarRuntime(IEnumerable<ILeverStage> stages, CallMeter meter, AdmissionControl admission, LedgerService ledger, PolicyLoader policies, Bursar.Core.Pricing.PriceCatalog catalog, TimeProvider time, ChatJobQueue jobs)
{
    private Task? _started;
    private readonly Lock _lock = new();

    public LeverPipeline Pipeline { get; } = new(stages, new ChatProviderCall(time, catalog), meter, admission);

    public TimeProvider Time => time;

    /// <summary>Deferred calls (<c>ChatOptions.AllowBackgroundResponses</c>): queued for the gateway's batch flusher, polled by continuation token.</summary>
    internal ChatJobQueue Jobs => jobs;

    /// <summary>Starts the ledger writer and loads the policies once.</summary>
    public Task EnsureStartedAsync(CancellationToken cancellationToken)
    {
        if (_started is { IsCompletedSuccessfully: true }) return Task.CompletedTask;
        lock (_lock)
        {
            if (_started is null || _started.IsFaulted || _started.IsCanceled) _started = StartAsync(cancellationToken);
            return _started;
        }
    }

    private async Task StartAsync(CancellationToken ct)
    {
        await ledger.StartAsync(ct).ConfigureAwait(false);
        await policies.StartAsync(ct).ConfigureAwait(false);
    }
}
