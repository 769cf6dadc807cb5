using Bursar.Core.Admission;
using Bursar.Core.Ledger;
using Bursar.Core.Metering;
using Microsoft.Extensions.DependencyInjection;

namespace Bursar.Core.Pipeline;

/// <summary>
/// The levers every call goes through, in one fixed order (<see cref="Order"/>), whatever face it came through. A face
/// registers the stages it wants (<see cref="LeverPipelineBuilder"/>), supplies its provider call, and runs each call
/// with <see cref="RunAsync"/>. The chain of delegates is built once, so running a call allocates nothing of its own.
/// Route policies switch stages on or off per call (<see cref="Routing.RoutePolicy"/>'s <c>ResponseCache</c>,
/// <c>SemanticCache</c>, <c>PromptCache</c>).
/// </summary>
public sealed class LeverPipeline
{
    /// <summary>
    /// The order of the levers: who is calling and which policy applies -> a run that has ended stops here -> the
    /// caches answer what they can -> the model is chosen -> the context is trimmed (later) -> the output is capped ->
    /// prompt-cache breakpoints -> rate limits, run caps and budgets -> deferral to a batch (later) -> the provider call.
    /// Settling (price, budget, run, ledger record) happens once, at <see cref="LeverCall.SealAsync"/>.
    /// </summary>
    public static IReadOnlyList<string> Order { get; } =
        ["attribution", "run-guard", "exact-cache", "semantic-cache", "route", "context", "output-cap", "prompt-cache", "admission", "batch"];

    private readonly LeverNext _first;
    private readonly LeverNext _provider;
    private readonly CallMeter _meter;
    private readonly AdmissionControl _admission;
    private readonly Func<LeverCall, LedgerRecord, LedgerRecord> _completeRun;
    private readonly Func<LeverCall, LedgerRecord, ValueTask<LedgerRecord>> _completeSharedRun;

    public LeverPipeline(IEnumerable<ILeverStage> stages, IProviderCall provider, CallMeter meter, AdmissionControl admission)
    {
        _meter = meter;
        _admission = admission;
        _completeRun = CompleteRun;
        _completeSharedRun = CompleteSharedRunAsync;
        Stages = stages.OrderBy(s => IndexOf(s.Name)).ToArray();
        var dup = Stages.GroupBy(s => s.Name).FirstOrDefault(g => g.Count() > 1);
        if (dup is not null) throw new InvalidOperationException($"The lever stage '{dup.Key}' is registered twice.");
        LeverNext next = _provider = provider.CallAsync;
        for (var i = Stages.Count - 1; i >= 0; i--)
        {
            var stage = Stages[i];
            var rest = next;
            next = (call, ct) => stage.InvokeAsync(call, rest, ct);
        }
        _first = next;
    }

    /// <summary>The registered stages in pipeline order.</summary>
    public IReadOnlyList<ILeverStage> Stages { get; }

    private static int IndexOf(string name)
    {
        for (var i = 0; i < Order.Count; i++) if (Order[i] == name) return i;
        throw new InvalidOperationException($"'{name}' is not a lever stage; the stages are: {string.Join(", ", Order)}.");
    }

    /// <summary>Runs the call through the stages and the provider call. A stage that ends it leaves <see cref="LeverCall.Refusal"/> or <see cref="LeverCall.CacheHit"/> for the face to answer with.</summary>
    public ValueTask RunAsync(LeverCall call, CancellationToken cancellationToken)
    {
        call.Pipeline = this;
        if (call.Rehearsal)
        {
            // a warm-up: the provider call alone, on the model asked (no stage keeps state of it)
            call.Model = call.Request.Model;
            return _provider(call, cancellationToken);
        }
        return _first(call, cancellationToken);
    }

    /// <summary>Settles <paramref name="call"/> through this pipeline when it is sealed, even when it ends before <see cref="RunAsync"/> (refused by the face: a bad key, a body too large).</summary>
    public void Track(LeverCall call) => call.Pipeline = this;

    /// <summary>Prices the call, settles its reservation, advances its run, and appends its ledger record: once per call.</summary>
    internal async ValueTask SettleAsync(LeverCall call)
    {
        if (call.Sealed) return;
        call.Sealed = true;
        if (call.Rehearsal)
        {
            // priced and built as a record would be (the same code, compiled before ready), then dropped: no row, no metric
            _meter.Rehearse(call);
            return;
        }
        if (call.DeferredJob is not null)
        {
            // queued as a job: no record now (the job writes its one record when its answer arrives), nothing stays held
            _admission.Release(call.Admitted);
            return;
        }
        if (call.Summary.ErrorType is not null && call.Outcome == "ok")
        {
            // the provider's stream carried an error event: the caller got it, and so does the ledger
            call.Outcome = "upstream_error";
            call.ErrorType ??= call.Summary.ErrorType;
        }
        if (call.Admitted.RunId is not null && _admission.Runs.SharedState is not null && !call.Admitted.RunLocal)
            await _meter.FinishAsync(call, _completeSharedRun).ConfigureAwait(false); // the run lives in a shared store: one round trip
        else
            await _meter.FinishAsync(call, _completeRun).ConfigureAwait(false);
    }

    private async ValueTask<LedgerRecord> CompleteSharedRunAsync(LeverCall call, LedgerRecord record)
    {
        var runEnd = await _admission.CompleteAsync(call.Admitted, record, call.Summary.ToolCalls, call.Summary.Text?.ToString()).ConfigureAwait(false);
        return runEnd is null ? record : record with { RunEndReason = runEnd };
    }

    /// <summary>Settles the call's reservation and advances its run; the record names the run's end when this call ended it.</summary>
    private LedgerRecord CompleteRun(LeverCall call, LedgerRecord record)
    {
        var runEnd = _admission.Complete(call.Admitted, record, call.Summary.ToolCalls, call.Summary.Text?.ToString());
        return runEnd is null ? record : record with { RunEndReason = runEnd };
    }
}

/// <summary>Registers lever stages: each lever's <c>UseX</c> extension adds its stage. The order is <see cref="LeverPipeline.Order"/>, not the order of the calls.</summary>
public sealed class LeverPipelineBuilder(IServiceCollection services)
{
    public IServiceCollection Services { get; } = services;

    public LeverPipelineBuilder Use<TStage>() where TStage : class, ILeverStage
    {
        Services.AddSingleton<TStage>();
        Services.AddSingleton<ILeverStage>(sp => sp.GetRequiredService<TStage>());
        return this;
    }
}
