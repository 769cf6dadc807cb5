namespace Bursar.Providers.Simulator;

/// <summary>One HTTP exchange as the Simulator sees it, independent of how it is hosted (Kestrel or in-process handler).</summary>
public abstract class SimulatorExchange
{
    public required string Method { get; init; }
    public required string Path { get; init; }
    public required ReadOnlyMemory<byte> Body { get; init; }
    /// <summary>The query string without its <c>?</c> (list endpoints page with it).</summary>
    public string Query { get; init; } = "";
    /// <summary>
    /// The request body as a stream instead of <see cref="Body"/>, for the endpoints that take uploads too large to hold
    /// (<see cref="ProviderSimulator.StreamsRequestBody"/>): the host passes its body stream unread.
    /// </summary>
    public Stream? BodyStream { get; init; }
    public abstract string? Header(string name);

    public abstract void SetStatus(int status);
    public abstract void SetHeader(string name, string value);
    /// <summary>Writes and flushes a chunk of the body (the first call sends status and headers).</summary>
    public abstract ValueTask WriteAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken);
}
