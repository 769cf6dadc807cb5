using Microsoft.Extensions.AI;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Microsoft.ML.Tokenizers;

namespace Bursar.Embeddings.Onnx;

/// <summary>
/// Sentence embeddings from a model file the operator supplies: a BERT-style ONNX encoder (for instance all-MiniLM-L6-v2 exported
/// with its <c>vocab.txt</c>) run by ONNX Runtime on the CPU. Inputs <c>input_ids</c>, <c>attention_mask</c> and (when the model
/// has it) <c>token_type_ids</c>; the output is <c>sentence_embedding</c> when the model has one, else <c>last_hidden_state</c>
/// mean-pooled over the attention mask. Vectors are L2-normalized, so cosine similarity is their dot product.
/// </summary>
public sealed class OnnxEmbeddingGenerator : IEmbeddingGenerator<string, Embedding<float>>
{
    private readonly InferenceSession _session;
    private readonly BertTokenizer _tokenizer;
    private readonly int _maxTokens;
    private readonly bool _typeIds;
    private readonly string _output;
    private readonly bool _pooled;

    /// <summary>Loads the model and vocabulary; throws <see cref="FileNotFoundException"/> or <see cref="InvalidDataException"/> naming the file and what is wrong.</summary>
    public OnnxEmbeddingGenerator(string modelPath, string vocabPath, int maxTokens = 256, bool lowerCase = true)
    {
        if (!File.Exists(modelPath)) throw new FileNotFoundException($"ONNX embedding model not found: {modelPath} (Bursar:SemanticCache:OnnxModelPath).", modelPath);
        if (!File.Exists(vocabPath)) throw new FileNotFoundException($"Tokenizer vocabulary not found: {vocabPath} (Bursar:SemanticCache:OnnxVocabPath, the model's vocab.txt).", vocabPath);
        try
        {
            _session = new InferenceSession(modelPath, new SessionOptions { IntraOpNumThreads = 1, GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL });
        }
        catch (OnnxRuntimeException e)
        {
            throw new InvalidDataException($"{modelPath} is not an ONNX model ONNX Runtime can load: {e.Message}", e);
        }
        _tokenizer = BertTokenizer.Create(vocabPath, new BertOptions { LowerCaseBeforeTokenization = lowerCase });
        _maxTokens = maxTokens;
        var inputs = _session.InputMetadata.Keys.ToHashSet(StringComparer.Ordinal);
        foreach (var required in new[] { "input_ids", "attention_mask" })
            if (!inputs.Contains(required)) throw new InvalidDataException($"{modelPath} has no '{required}' input (inputs: {string.Join(", ", inputs)}); a BERT-style sentence encoder is expected.");
        _typeIds = inputs.Contains("token_type_ids");
        var outputs = _session.OutputMetadata.Keys.ToArray();
        _pooled = outputs.Contains("sentence_embedding");
        _output = _pooled ? "sentence_embedding" : outputs.Contains("last_hidden_state") ? "last_hidden_state" : outputs[0];
        Metadata = new EmbeddingGeneratorMetadata("onnx", new Uri(Path.GetFullPath(modelPath)), Path.GetFileName(modelPath));
    }

    public EmbeddingGeneratorMetadata Metadata { get; }

    public Task<GeneratedEmbeddings<Embedding<float>>> GenerateAsync(IEnumerable<string> values, EmbeddingGenerationOptions? options = null, CancellationToken cancellationToken = default)
    {
        var result = new List<Embedding<float>>();
        foreach (var text in values)
        {
            cancellationToken.ThrowIfCancellationRequested();
            result.Add(new Embedding<float>(Embed(text)) { ModelId = Metadata.DefaultModelId });
        }
        return Task.FromResult(new GeneratedEmbeddings<Embedding<float>>(result));
    }

    /// <summary>One sentence: [CLS] tokens [SEP], truncated to the model's limit, encoded, pooled and normalized.</summary>
    public float[] Embed(string text)
    {
        var ids = _tokenizer.EncodeToIds(text, _maxTokens, addSpecialTokens: true, out _, out _);
        var n = ids.Count;
        var inputIds = new DenseTensor<long>([1, n]);
        var mask = new DenseTensor<long>([1, n]);
        var types = new DenseTensor<long>([1, n]);
        for (var i = 0; i < n; i++)
        {
            inputIds[0, i] = ids[i];
            mask[0, i] = 1;
        }
        var feeds = new List<NamedOnnxValue> { NamedOnnxValue.CreateFromTensor("input_ids", inputIds), NamedOnnxValue.CreateFromTensor("attention_mask", mask) };
        if (_typeIds) feeds.Add(NamedOnnxValue.CreateFromTensor("token_type_ids", types));
        using var outputs = _session.Run(feeds, [_output]);
        var tensor = outputs[0].AsTensor<float>();
        float[] vector;
        if (_pooled || tensor.Dimensions.Length == 2)
        {
            vector = tensor.ToArray();
        }
        else
        {
            // mean over the tokens the mask keeps (all of them here: one sentence, no padding)
            var dim = tensor.Dimensions[2];
            vector = new float[dim];
            for (var t = 0; t < n; t++)
                for (var d = 0; d < dim; d++) vector[d] += tensor[0, t, d];
            for (var d = 0; d < dim; d++) vector[d] /= n;
        }
        var norm = MathF.Sqrt(vector.Sum(x => x * x));
        if (norm > 0) for (var d = 0; d < vector.Length; d++) vector[d] /= norm;
        return vector;
    }

    public object? GetService(Type serviceType, object? serviceKey = null) => serviceType.IsInstanceOfType(this) ? this : null;

    public void Dispose() => _session.Dispose();
}
