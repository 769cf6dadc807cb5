namespace Bursar.Core.Pipeline;

/// <summary>The rest of the pipeline after a stage: the later stages, then the face's provider call.</summary>
public delegate ValueTask LeverNext(LeverCall call, CancellationToken cancellationToken);

/// <summary>
/// One lever as a stage of the call's pipeline. A stage reads the call, may decide (a model, a cap, an edit), may end
/// the call early (<see cref="LeverCall.Refuse"/>, a cache hit) by not calling <c>next</c>, and may act on the answer
/// after <c>next</c> returns (fill a cache). Stages are singletons: per-call state lives on the <see cref="LeverCall"/>.
/// </summary>
public interface ILeverStage
{
    /// <summary>The stage's place in <see cref="LeverPipeline.Order"/>.</summary>
    string Name { get; }

    ValueTask InvokeAsync(LeverCall call, LeverNext next, CancellationToken cancellationToken);
}

/// <summary>
/// The face's last step: send the call to the provider and give its answer to the caller (the gateway: translation,
/// upstream with retries and fallbacks, the answer relayed as it streams; the .NET library: the inner <c>IChatClient</c>).
/// It calls <see cref="LeverCall.SealAsync"/> just before the caller gets the last byte.
/// </summary>
public interface IProviderCall
{
    ValueTask CallAsync(LeverCall call, CancellationToken cancellationToken);
}
