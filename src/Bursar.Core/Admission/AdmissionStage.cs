using Bursar.Core.Pipeline;

namespace Bursar.Core.Admission;

/// <summary>
/// The last word before money is spent: rate limits (GCRA, requests and tokens per minute), run caps (each call in
/// flight holds its worst case and a turn), then budgets (the call's true worst case reserved atomically against every
/// budget that applies, or the key's cheaper model, or a 429 naming the budget, its limit, the spend and the reset).
/// </summary>
public sealed class AdmissionStage(AdmissionControl admission) : ILeverStage
{
    public string Name => "admission";

    public ValueTask InvokeAsync(LeverCall call, LeverNext next, CancellationToken cancellationToken)
    {
        var req = call.Request;
        var pending = admission.AdmitAsync(call.Key, call.Attribution, call.Model, req.EstimatedInputTokens, req.InputTokenBound, call.MaxTokens ?? req.MaxTokens, req.Choices, cancellationToken, call.SpareReservation);
        // in process admission completes at once (no state machine); shared budget counters take a round trip
        if (pending.IsCompletedSuccessfully) return Continue(call, pending.Result, next, cancellationToken);
        return AwaitedAsync(pending, call, next, cancellationToken);
    }

    private async ValueTask AwaitedAsync(ValueTask<(AdmissionDecision, LeverRefusal?)> pending, LeverCall call, LeverNext next, CancellationToken cancellationToken) =>
        await Continue(call, await pending.ConfigureAwait(false), next, cancellationToken).ConfigureAwait(false);

    private ValueTask Continue(LeverCall call, (AdmissionDecision Decision, LeverRefusal? Refusal) result, LeverNext next, CancellationToken cancellationToken)
    {
        var (admitted, refusal) = result;
        call.Admitted = admitted;
        if (admitted.Reservation.Holds.Length > 0) call.SpareReservation = admitted.Reservation;
        if (refusal is not null)
        {
            call.Refuse(refusal, "refused");
            return ValueTask.CompletedTask;
        }
        call.Model = admitted.Model!;
        call.RoutingReason = admitted.RoutingReason ?? call.RoutingReason;
        if (admitted.RunId is not null && admission.Runs.Options.NeedsText) call.Summary.Text = new System.Text.StringBuilder();
        return next(call, cancellationToken);
    }
}

public static class AdmissionStageExtensions
{
    /// <summary>Rate limits, run caps and budgets before the provider call.</summary>
    public static LeverPipelineBuilder UseAdmission(this LeverPipelineBuilder builder) => builder.Use<AdmissionStage>();
}
