// Replays training steps on given batches, from the weights in a model file, and writes the
// weights after them: the full-size counterpart of the tiny parity fixtures. Driven by
// bench/full_size_parity.py, which runs the same steps in PyTorch and compares.
//
//   replay_steps --model start.safetensors --batches batches.f32 --batch 64 --steps 3
//                --out after.safetensors [--gradients gradients.safetensors] [--loss-weights 1,50,1]
//
// --gradients writes the gradients both optimisers stepped with in the last step, as a model
// file whose weights are those gradients (batch-norm statistics as after the steps).
// batches.f32: steps x batch x nc x S x S raw little-endian float32 images in [-1, 1].
// Prints the seven losses of each step as one JSON array per line.
#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "model_file.hpp"
#include "skipganomaly/engine/skip_ganomaly.hpp"

int main(int argc, char** argv) try {
    using namespace sga;
    std::string model_path, batches_path, out_path, gradients_path;
    std::int64_t batch = 64, steps = 1;
    LossWeights weights;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string flag = argv[i], value = argv[i + 1];
        if (flag == "--model") model_path = value;
        else if (flag == "--batches") batches_path = value;
        else if (flag == "--out") out_path = value;
        else if (flag == "--gradients") gradients_path = value;
        else if (flag == "--batch") batch = std::stoll(value);
        else if (flag == "--steps") steps = std::stoll(value);
        else if (flag == "--loss-weights") {  // w_adv,w_con,w_lat: isolates one loss term's gradient path
            if (std::sscanf(value.c_str(), "%f,%f,%f", &weights.adversarial, &weights.contextual, &weights.latent) != 3)
                throw InvalidArgument("--loss-weights takes w_adv,w_con,w_lat");
        }
        else throw InvalidArgument("unknown option " + flag);
    }
    if (model_path.empty() || batches_path.empty() || out_path.empty())
        throw InvalidArgument("--model, --batches and --out are required");

    const model_file::Reader reader = model_file::Reader::open(model_path);
    const Architecture arch = reader.architecture();
    Context ctx(Device::Cpu);
    SkipGanomaly model(arch, AdamHyperparameters{}, weights);
    model.materialize(ctx);
    reader.load_into(model);

    const std::int64_t per_batch = batch * arch.channels * arch.image_size * arch.image_size;
    std::vector<float> images(static_cast<std::size_t>(per_batch * steps));
    std::ifstream in(batches_path, std::ios::binary);
    if (!in.read(reinterpret_cast<char*>(images.data()), static_cast<std::streamsize>(images.size() * sizeof(float))))
        throw IoError(batches_path + ": fewer than " + std::to_string(steps) + " batches of " + std::to_string(batch));

    Tape tape(ctx);
    RandomStream random(0);
    Tensor x({batch, arch.channels, arch.image_size, arch.image_size}, Device::Cpu);
    for (std::int64_t s = 0; s < steps; ++s) {
        std::copy_n(images.data() + s * per_batch, per_batch, x.data());
        const StepLosses l = model.train_step(ctx, tape, x.view(), random);
        std::cout << nlohmann::json({l.generator, l.generator_adversarial, l.generator_contextual, l.generator_latent,
                                     l.discriminator, l.discriminator_real, l.discriminator_fake})
                  << "\n";
    }
    model_file::save(out_path, model, {{"replay_steps", steps}}, nullptr);
    if (!gradients_path.empty()) {
        for (ParameterBlock* block : {&model.generator.parameters, &model.discriminator.parameters})
            copy_bytes(block->values().data(), Device::Cpu, block->grads().data(), Device::Cpu,
                       static_cast<std::size_t>(block->values().numel()) * sizeof(float));
        model_file::save(gradients_path, model, {{"replay_steps_gradients", steps}}, nullptr);
    }
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
}
