using Bursar.Core.Pipeline;

namespace Bursar.Core.Runs;

/// <summary>
/// A run that has ended (its turn, tool-call or spend cap was reached, or its done-condition met) takes no further
/// calls, not even ones a cache could answer: 429 <c>run_limit_exceeded</c> naming the run, why it ended and what it
/// spent. The caps themselves are held and checked at admission, where the call's worst case is known.
/// </summary>
public sealed class RunGuardStage(RunTracker runs) : ILeverStage
{
    public string Name => "run-guard";

    public ValueTask InvokeAsync(LeverCall call, LeverNext next, CancellationToken cancellationToken)
    {
        if (call.Attribution.RunId is not { } runId) return next(call, cancellationToken);
        if (runs.SharedState is not null) return SharedAsync(call, runId, next, cancellationToken);
        if (runs.HasEnded(call.Attribution.KeyId, runId, out var ended))
        {
            call.Refuse(RunRefusals.ToRefusal(ended!));
            return ValueTask.CompletedTask;
        }
        return next(call, cancellationToken);
    }

    private async ValueTask SharedAsync(LeverCall call, string runId, LeverNext next, CancellationToken cancellationToken)
    {
        // the run's state is in a shared store: another instance may have ended it
        if (await runs.EndedAsync(call.Attribution.KeyId, runId, cancellationToken).ConfigureAwait(false) is { } ended)
        {
            call.Refuse(RunRefusals.ToRefusal(ended));
            return;
        }
        await next(call, cancellationToken).ConfigureAwait(false);
    }
}

public static class RunRefusals
{
    /// <summary>A run cap's refusal as the pipeline's value: 429 <c>run_limit_exceeded</c>.</summary>
    public static LeverRefusal ToRefusal(RunRefusal r) => new(429, r.Message, Blame.Policy) { Type = "run_limit_exceeded", Code = "run_limit_exceeded" };
}

public static class RunGuardStageExtensions
{
    /// <summary>Calls of an ended run are refused before any lever runs.</summary>
    public static LeverPipelineBuilder UseRunGuard(this LeverPipelineBuilder builder) => builder.Use<RunGuardStage>();
}
